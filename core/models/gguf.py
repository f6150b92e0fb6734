"""The GGUF runtime: a GGUF file loaded in llama-cpp on the CPU, shared by study cards,
evaluation and the export's verification.

A llama.cpp context is not thread-safe: every call holds the model's lock, and a process keeps
one loaded model in its ModelSlot. Greedy answers are rendered with the file's own chat
template, as llama-cpp's chat completion renders them, so they compare with transformers'.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import statistics
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
    """One completion: its text, the tokens generated and wall time."""

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

        cores = usable_cores()  # llama-cpp-python would count the host's cores, quota or not
        try:
            self.llama = Llama(
                model_path=str(path),
                n_ctx=context,
                n_batch=batch,
                n_ubatch=batch,
                n_threads=max(1, cores // 2),
                n_threads_batch=cores,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {path.name}: {exc}") from None
        self.path = path
        self.key = file_stamp(path)
        self.threads = DecodeThreads(self.llama)
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
        """A chat completion rendered with the file's chat template, grammar-constrained to `schema`
        when given, with llama-cpp-python's chat-completion sampling settings (TokenSampler).

        `on_token` is called with the number of tokens generated so far, for progress bars.
        """
        import llama_cpp

        started = time.monotonic()
        with self.lock:
            llama = self.llama
            try:
                prompt = gguf_prompt_tokens(llama, messages)
            except InferenceError as exc:
                raise ModelError(str(exc)) from None
            room = llama.n_ctx() - len(prompt)
            if room < 1:
                raise ModelError(
                    f"llama.cpp could not answer: the prompt takes {len(prompt)} tokens of a "
                    f"{llama.n_ctx()}-token context"
                )
            sampler = TokenSampler(llama, temperature, repeat_penalty, seed, schema)
            generated: list[int] = []
            try:
                read_prompt(llama, prompt)
                while max_tokens > 0:
                    token = sampler.sample()
                    if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                        break
                    generated.append(token)
                    if on_token:
                        on_token(len(generated))
                    if len(generated) >= min(max_tokens, room):
                        break
                    threads = self.threads.next()
                    decode_started = time.perf_counter()
                    llama.eval([token])
                    self.threads.record(threads, time.perf_counter() - decode_started)
            except RuntimeError as exc:  # llama.cpp failed to decode
                llama.reset()  # what the context holds is unknown: read the next prompt whole
                raise ModelError(f"llama.cpp could not answer: {exc}") from None
            finally:
                sampler.close()
            text = token_text(llama, generated)
        return ChatResult(text, len(generated), time.monotonic() - started)


def read_prompt(llama: Any, prompt: list[int]) -> None:
    """Feeds `prompt` to llama.cpp, reusing the part its context already holds from the last call
    (the system prompt and notes a retry or Regenerate repeats), as llama-cpp-python's generate
    does; at least the last token is read again, so the logits are the prompt's."""
    held, common = llama.input_ids[: llama.n_tokens], 0
    limit = min(len(held), len(prompt) - 1)
    while common < limit and held[common] == prompt[common]:
        common += 1
    if common and llama._ctx.kv_cache_seq_rm(-1, common, -1):
        llama.n_tokens = common
    else:
        llama.reset()
        common = 0
    llama.eval(prompt[common:])


def token_text(llama: Any, tokens: list[int]) -> str:
    """The text of generated tokens; a character the last token leaves unfinished is dropped.

    llama-cpp-python's detokenize reads each piece into 32 bytes and garbles longer ones (SmolLM2
    has 47, such as a run of 64 "-"), so each piece is read into a buffer of the size it needs.
    """
    import codecs

    import llama_cpp

    vocab, pieces, size = llama._model.vocab, [], 64
    buffer = ctypes.create_string_buffer(size)
    for token in tokens:
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if length < 0:  # the piece needs -length bytes
            size = -length
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        pieces.append(buffer.raw[: max(0, length)])
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(b"".join(pieces), final=False)


# llama-cpp-python's create_chat_completion sampling defaults, kept so answers read as before.
TOP_K, TOP_P, MIN_P, PENALTY_WINDOW = 40, 0.95, 0.05, 64


class TokenSampler:
    """llama.cpp's samplers over a loaded model's next-token logits, with the grammar checked after
    sampling rather than before, as llama.cpp's own common sampler (its CLI and server) does.

    llama-cpp-python applies the grammar to the whole vocabulary at every step (about 10 ms a token
    for SmolLM2's 49k tokens here, a third of the time). Sampling first and checking only the token
    drawn costs almost nothing; only when the grammar refuses it are the logits sampled again with
    the grammar applied first. A greedy answer is the same either way; when sampling, top-k, top-p
    and min-p cut the candidates before the grammar sees them, so an allowed token far down the
    list is drawn less often than llama-cpp-python would draw it (llama.cpp's trade-off too).
    """

    def __init__(
        self,
        llama: Any,
        temperature: float,
        repeat_penalty: float,
        seed: int | None,
        schema: dict[str, Any] | None,
    ):
        import llama_cpp
        import numpy as np

        self.context = llama._ctx.ctx
        self.vocabulary = llama.n_vocab()
        # llama.cpp's llama_token_data records: the candidates the samplers work on.
        record = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self.candidates = np.zeros(self.vocabulary, dtype=record)
        self.token_ids = np.arange(self.vocabulary, dtype=np.int32)
        self.drawn = (llama_cpp.llama_token_data * 1)()
        self.grammar = None
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            steps = [
                llama_cpp.llama_sampler_init_penalties(
                    self.vocabulary, PENALTY_WINDOW, repeat_penalty, 0.0, 0.0
                )
            ]
            if temperature <= 0:
                steps.append(llama_cpp.llama_sampler_init_greedy())
            else:
                steps += [
                    llama_cpp.llama_sampler_init_top_k(TOP_K),
                    llama_cpp.llama_sampler_init_top_p(TOP_P, 1),
                    llama_cpp.llama_sampler_init_min_p(MIN_P, 1),
                    llama_cpp.llama_sampler_init_temp(temperature),
                    llama_cpp.llama_sampler_init_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed),
                ]
            for step in steps:
                llama_cpp.llama_sampler_chain_add(self.chain, step)  # the chain owns and frees them
            if schema is not None:
                self.grammar = self._grammar(llama, schema)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _grammar(llama: Any, schema: dict[str, Any]) -> Any:
        """llama.cpp's grammar sampler for a JSON schema; ModelError when it cannot be made."""
        import llama_cpp
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        try:
            grammar = json_schema_to_gbnf(json.dumps(schema))
        except (ValueError, TypeError, KeyError, AssertionError, RecursionError) as exc:
            raise ModelError(f"no grammar can be made from the reply's JSON schema: {exc}") from None
        sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise ModelError("llama.cpp refused the grammar made from the reply's JSON schema")
        return sampler

    def _apply(self, samplers: list[Any]) -> int:
        """The token the samplers pick from the whole vocabulary's current logits."""
        import llama_cpp
        import numpy as np

        logits = llama_cpp.llama_get_logits_ith(self.context, -1)
        self.candidates["id"] = self.token_ids
        self.candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self.vocabulary,))
        self.candidates["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            self.candidates.ctypes.data_as(llama_cpp.llama_token_data_p), self.vocabulary, -1, False
        )
        for sampler in samplers:
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        if not 0 <= array.selected < array.size:  # e.g. a grammar that allows no token at all
            raise ModelError("llama.cpp's samplers left no token to write")
        return int(array.data[array.selected].id)

    def _allowed(self, token: int) -> bool:
        """Whether the grammar lets `token` come next."""
        import llama_cpp

        self.drawn[0].id, self.drawn[0].logit, self.drawn[0].p = token, 0.0, 0.0
        array = llama_cpp.llama_token_data_array(self.drawn, 1, -1, False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return not math.isinf(self.drawn[0].logit)

    def sample(self) -> int:
        """The next token, accepted by every sampler (the penalties' history, the grammar's state)."""
        import llama_cpp

        token = self._apply([self.chain])
        if self.grammar is not None:
            if not self._allowed(token):
                token = self._apply([self.grammar, self.chain])
            llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def close(self) -> None:
        """Frees the samplers."""
        import llama_cpp

        for sampler in (self.chain, self.grammar):
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
        self.chain = self.grammar = None


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPU cores this process may run on: its affinity, capped by a cgroup CPU quota (containers such
    as Community Cloud's report the host's cores but allow fewer)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class DecodeThreads:
    """How many threads llama.cpp decodes a token with, chosen by timing both choices as it writes.

    On an idle 2-core machine two threads decode SmolLM2 1.8x faster than one; with the other core
    busy they decode 1.8x slower (llama.cpp's threads wait on each other). So every PERIOD tokens
    each choice (half the usable cores, all of them) decodes PROBE tokens, and the faster by median
    decodes the rest of the period.
    """

    PROBE = 4
    PERIOD = 128

    def __init__(self, llama: Any, choices: list[int] | None = None):
        cores = usable_cores()
        self.context, self.batch_threads = llama._ctx.ctx, llama.n_threads_batch
        self.choices = choices or sorted({max(1, cores // 2), cores})
        self.timings: dict[int, list[float]] = {choice: [] for choice in self.choices}
        self.position = 0
        self.current = 0

    def next(self) -> int:
        """The thread count for the next token's decode (set in llama.cpp)."""
        import llama_cpp

        probing = self.position % self.PERIOD < self.PROBE * len(self.choices)
        if probing:
            threads = self.choices[(self.position % self.PERIOD) // self.PROBE]
        else:
            threads = min(self.choices, key=lambda n: statistics.median(self.timings[n] or [math.inf]))
        if threads != self.current:
            llama_cpp.llama_set_n_threads(self.context, threads, self.batch_threads)
            self.current = threads
        return threads

    def record(self, threads: int, seconds: float) -> None:
        """One token's decode time with `threads`; only the latest probes count."""
        if self.position % self.PERIOD < self.PROBE * len(self.choices):
            self.timings[threads] = [*self.timings[threads], seconds][-self.PROBE :]
        self.position += 1


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
        text = token_text(llama, new)
    return Generation(text, new, len(prompt), seconds)
