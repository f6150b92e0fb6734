"""The GGUF runtime: a GGUF file loaded in llama-cpp on the CPU, shared by study cards,
evaluation and the export's verification.

A llama.cpp context is not thread-safe: every call holds the model's lock, and a process keeps
one loaded model in its ModelSlot. Greedy answers are rendered with the file's own chat
template, as llama-cpp's chat completion renders them, so they compare with transformers'.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.models.generation import Generation, InferenceError
from core.store.files import file_stamp

GGUF_MAGIC = b"GGUF"


DEFAULT_CONTEXT = 4096


# llama.cpp's prompt batch (n_batch = n_ubatch). Its compute buffer is about n_ubatch x vocabulary
# x 4 bytes: 99 MiB at llama.cpp's 512 for SmolLM2-135M, 25 MiB at 128, at the same prompt speed
# here (bench/cards.py --memory; README "Memory").
DEFAULT_BATCH = 128


class ModelError(ValueError):
    """A model that cannot be used: missing, not a GGUF file, or unloadable."""


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


@dataclass(frozen=True)
class ChatResult:
    """One completion: its text, the tokens generated (one per streamed piece) and wall time."""

    text: str
    tokens: int
    seconds: float


class GgufModel:
    """A loaded GGUF model; every call holds its lock (llama.cpp contexts are not thread-safe)."""

    def __init__(
        self, path: Path, context: int = DEFAULT_CONTEXT, batch: int = DEFAULT_BATCH, verbose: bool = False
    ):
        check_gguf(path)
        from llama_cpp import Llama

        try:
            self.llama = Llama(
                model_path=str(path),
                n_ctx=context,
                n_batch=batch,
                n_ubatch=batch,
                verbose=verbose,
            )
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
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> ChatResult:
        """A chat completion, grammar-constrained to `schema` when given.

        `on_token` is called with the number of tokens generated so far, for progress bars.
        llama-cpp-python takes the schema as `{"type": "json_object", "schema": ...}`; its
        `json_schema` type is silently ignored.
        """
        options: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "repeat_penalty": repeat_penalty,
        }
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
        self.model: GgufModel | None = None

    def get(self, path: Path) -> GgufModel:
        """The loaded model for `path`, loading it in place of the current one if needed."""
        with self.lock:
            current = self.model
            if current is not None and current.key == file_stamp(path):
                return current
            if current is not None and current.lock.locked():
                raise ModelError(
                    f"another session is generating with {current.path.name}; try again in a moment"
                )
            self.model = None  # let the old model go before the new one loads
            self.model = GgufModel(path)
            return self.model


def gguf_prompt_tokens(llama: Any, messages: list[dict]) -> list[int]:
    """The prompt tokens llama-cpp's chat completion would feed for `messages` (the GGUF's template)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise InferenceError("the GGUF file has no chat template (tokenizer.chat_template)")
    model = llama._model
    eos, bos = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(eos) if eos != -1 else "",
        bos_token=model.token_get_text(bos) if bos != -1 else "",
    )
    rendered = formatter(messages=messages)
    return llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)


def gguf_greedy_with(model: Any, messages: list[dict], max_new_tokens: int) -> Generation:
    """A greedy answer from a loaded GgufModel, rendered as llama-cpp's chat completion renders it."""
    import llama_cpp

    llama = model.llama
    with model.lock:
        prompt = gguf_prompt_tokens(llama, messages)
        if len(prompt) + max_new_tokens > llama.n_ctx():
            raise InferenceError(
                f"the prompt ({len(prompt)} tokens) and answer do not fit the context ({llama.n_ctx()})"
            )
        vocab = llama._model.vocab
        started = time.monotonic()
        new: list[int] = []
        for token in llama.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            new.append(int(token))
            if len(new) >= max_new_tokens:
                break
        seconds = time.monotonic() - started
        text = llama.detokenize(new, special=False).decode("utf-8", errors="replace")
    return Generation(text, new, len(prompt), seconds)
