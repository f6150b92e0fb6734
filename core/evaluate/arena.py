"""The Arena: runs' variants answer one prompt, streamed; a person votes for the better of two
answers; the votes make a leaderboard across runs and a preference dataset.

A contender is a run's variant: one of its exported GGUF files (llama-cpp on the CPU) or its
LoRA adapter on the full-precision base (transformers, where the training stack is installed).
Answers are greedy, as evaluations are, so the same prompt gets the same answer again.

Votes are pairwise: with more than two answers shown, the person picks the two to vote on. Each
vote is one line of `<runs root>/.arena/votes.jsonl`, appended under an flock (never rewritten:
no vote is lost to a read-modify-write race), with the prompt and both answers (their text, for
the preference dataset, and the SHA-256 of each: a record whose text does not match its hash is
not counted). Every line is validated when read; a torn or planted line is skipped and counted.

The leaderboard fits a Bradley-Terry model, P(i beats j) = p_i / (p_i + p_j), by Newton's method on
its logistic log-likelihood, a tie counting half a win for each side, with one virtual
game (half won) against a fixed player of strength 1 so that an entry that never lost still has
a finite strength (that player also fixes the scale). Scores are on the Elo scale
(1000 + 400 log10 p: 1000 is the virtual player's, an entry with even results); the interval is
the 2.5-97.5 percentile range over bootstrap resamples of the votes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import first_line
from core.evaluate.answers import VARIANT_FILE_PATTERN, parse_variant, variant_label
from core.evaluate.checks import MAX_ANSWER_CHARS
from core.evaluate.prompt_sets import MAX_PROMPT_CHARS
from core.evaluate.ratings import answer_sha256
from core.machine.installed import package_version
from core.machine.system import TRAINING_HINT, Capability
from core.models.generation import (
    InferenceError,
    adapter_weights,
    check_adapter,
    load_run_model,
    render_prompt,
    run_base_model,
    stop_token_ids,
)
from core.models.gguf import GgufModel, ModelError
from core.models.pool import ModelPool, PooledModel
from core.store.files import (
    append_jsonl,
    file_stamp,
    folder_size,
    is_real_dir,
    open_regular,
    read_jsonl,
)
from core.store.runs import ADAPTER_DIR, RUN_NAME_PATTERN, list_runs, now_iso, run_gguf_files
from core.train.backends import resolve_base_model

ARENA_DIR = ".arena"
VOTES_FILE = "votes.jsonl"
MAX_VOTES_BYTES = 64 << 20  # some 1,500 votes of two 20,000-character answers; far more of usual ones
WINNERS = ("a", "b", "tie")
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 1024
BOOTSTRAP_SAMPLES = 200
MIN_INTERVAL_VOTES = 5  # below this, resampling an entry's few votes gives no meaningful interval
ELO_BASE, ELO_SCALE = 1000.0, 400.0
TOLERANCE = 1e-9  # the largest change of a log-strength at which the fit stops
ADAPTER_PACKAGES = ("torch", "transformers", "peft")


class ArenaError(ValueError):
    """A contender that cannot answer or a vote that cannot be stored; the message says why."""


@dataclass(frozen=True)
class Contender:
    """A run's variant: `variant` is "adapter" or "gguf-<file stem>" (as evaluation results name it)."""

    run: str
    variant: str
    path: Path  # the GGUF file, or the run folder for an adapter

    @property
    def key(self) -> str:
        """How votes and the leaderboard name it: `run/variant`."""
        return f"{self.run}/{self.variant}"

    @property
    def label(self) -> str:
        """As the page shows it: `run · gguf:FILE.gguf` or `run · adapter`."""
        return f"{self.run} · {variant_label(self.variant)}"


def adapter_capability() -> Capability:
    """Whether adapters can answer here: torch, transformers and peft installed (not on
    requirements.txt: an app-only install runs GGUF files only)."""
    missing = [name for name in ADAPTER_PACKAGES if package_version(name) is None]
    if missing:
        return Capability("Adapters", False, f"missing {', '.join(missing)}: {TRAINING_HINT}")
    return Capability("Adapters", True, "transformers + peft on the CPU")


def contenders(root: Path, *, adapters: bool) -> list[Contender]:
    """Every exported GGUF file of the runs under `root` (newest run first), then, with `adapters`,
    every run's adapter (slower on a CPU); broken runs are left out."""
    runs = [run for run in list_runs(root) if not run.broken]
    found = [
        Contender(run.name, parse_variant(run.path, f"gguf:{path.name}").file_name, path)
        for run in runs
        for path in run_gguf_files(run.path)
    ]
    if adapters:
        found += [
            Contender(run.name, "adapter", run.path) for run in runs if is_real_dir(run.path / ADAPTER_DIR)
        ]
    return found


@dataclass
class AnswerStream:
    """A contender's answer as it streams: iterate for the text's pieces; afterwards `text`,
    `tokens`, `first_token_s` (from the request, a model load included, to the first piece),
    `seconds` (from asking the loaded model to the last piece) and `done` are set."""

    contender: Contender
    prompt: str
    pieces: Generator[str, None, None]
    started: float
    asked: float
    text: str = ""
    tokens: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0
    done: bool = False

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self.pieces:
                if self.first_token_s is None:
                    self.first_token_s = time.monotonic() - self.started
                self.text += piece
                self.tokens += 1
                yield piece
        finally:
            self.pieces.close()  # a reader that stops early (a rerun) frees the model at once
        self.seconds = time.monotonic() - self.asked
        self.done = True

    @property
    def tokens_per_s(self) -> float | None:
        """Generated pieces (tokens for llama-cpp) per second of generation."""
        return self.tokens / self.seconds if self.done and self.seconds > 0 else None


def messages_for(prompt: str) -> list[dict[str, str]]:
    """The chat a prompt is asked in: the prompt alone, as the user's turn (as evaluations ask)."""
    return [{"role": "user", "content": prompt}]


def check_prompt(prompt: str, max_tokens: int) -> None:
    """ArenaError unless `prompt` is non-empty text of at most MAX_PROMPT_CHARS and `max_tokens` in range."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ArenaError("type a prompt first")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ArenaError(f"the prompt is {len(prompt)} characters long (at most {MAX_PROMPT_CHARS})")
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise ArenaError(f"new tokens must be between 1 and {MAX_TOKENS_LIMIT} (got {max_tokens})")


def _gguf_entry(pool: ModelPool, path: Path) -> PooledModel:
    def load() -> tuple[Any, threading.Lock, Any]:
        model = GgufModel(path)
        return model, model.lock, model.llama.close

    try:
        return pool.get(("gguf", file_stamp(path)), path.stat().st_size, load)
    except (OSError, ImportError, ModelError) as exc:  # ImportError: no llama-cpp-python here
        raise ArenaError(f"{path.name} cannot be loaded: {first_line(exc)}") from None


@contextlib.contextmanager
def _generating(entry: PooledModel) -> Iterator[None]:
    """Hold the pooled model's lock while it generates; ArenaError when the pool unloaded it after
    it was handed out (another session needed the room before this one started)."""
    with entry.lock:
        if entry.unloaded:
            raise ArenaError("the model was unloaded to make room for another session's: ask again")
        yield


def gguf_pieces(entry: PooledModel, prompt: str, max_tokens: int) -> Iterator[str]:
    """The pooled GGUF model's greedy answer to `prompt`, piece by piece, as llama-cpp's streaming
    chat completion gives it (its own chat template); the model's lock is held until the end."""
    model: GgufModel = entry.model
    with _generating(entry):
        try:
            for chunk in model.llama.create_chat_completion(
                messages=messages_for(prompt),
                max_tokens=max_tokens,
                temperature=0.0,
                repeat_penalty=1.0,
                stream=True,
            ):
                if piece := chunk["choices"][0].get("delta", {}).get("content"):
                    yield piece
        except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the context
            raise ArenaError(f"llama.cpp could not answer: {first_line(exc)}") from None


def adapter_size_estimate(run_path: Path) -> int:
    """Bytes the run's base model takes on disk (its folder, or its Hugging Face cache entry):
    the pool's estimate of its full-precision model in memory; 0 when neither is found."""

    source = Path(resolve_base_model(run_base_model(run_path)))
    if source.is_dir():
        return folder_size(source)
    from huggingface_hub.constants import HF_HUB_CACHE

    cached = Path(HF_HUB_CACHE) / f"models--{str(source).replace('/', '--')}"
    return folder_size(cached) if cached.is_dir() else 0


def _adapter_entry(pool: ModelPool, run_path: Path) -> PooledModel:

    def load() -> tuple[Any, threading.Lock, Any]:
        return load_run_model(run_path), threading.Lock(), lambda: None  # freed when the pool drops it

    try:
        weights = adapter_weights(check_adapter(run_path))
        return pool.get(("adapter", file_stamp(weights)), adapter_size_estimate(run_path), load)
    except (OSError, InferenceError) as exc:
        raise ArenaError(f"the adapter of {run_path.name} cannot be loaded: {first_line(exc)}") from None


def adapter_pieces(entry: PooledModel, prompt: str, max_tokens: int) -> Iterator[str]:
    """The run's adapter model's greedy answer to `prompt`, piece by piece (transformers' text
    streamer: a piece is a word or so); generation runs on a thread while this generator holds the
    model's lock, and stops when the consumer stops reading."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    model, tokenizer = entry.model
    encoded = tokenizer(
        render_prompt(tokenizer, messages_for(prompt)), add_special_tokens=False, return_tensors="pt"
    )
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    stopped = threading.Event()

    class Stopped(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stopped.is_set(), dtype=torch.bool)

    stops = stop_token_ids(tokenizer)

    def generate() -> None:
        with torch.inference_mode():
            model.generate(
                **encoded.to(model.device),
                do_sample=False,
                max_new_tokens=max_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([Stopped()]),
            )

    with _generating(entry):
        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stopped.set()
            thread.join()


def stream_answer(pool: ModelPool, contender: Contender, prompt: str, max_tokens: int) -> AnswerStream:
    """The contender's answer to `prompt`, to iterate as it streams; its model comes from `pool`
    (loaded when needed). ArenaError when the prompt is refused or the model cannot load."""
    check_prompt(prompt, max_tokens)
    started = time.monotonic()
    if contender.variant == "adapter":
        entry = _adapter_entry(pool, contender.path)
        pieces = adapter_pieces(entry, prompt, max_tokens)
    else:
        entry = _gguf_entry(pool, contender.path)
        pieces = gguf_pieces(entry, prompt, max_tokens)
    return AnswerStream(contender, prompt, pieces, started, time.monotonic())


@dataclass(frozen=True)
class Side:
    """One answer of a vote: whose it is and its text."""

    run: str
    variant: str
    answer: str

    @property
    def key(self) -> str:
        return f"{self.run}/{self.variant}"


@dataclass(frozen=True)
class Vote:
    """A person's vote between two answers to `prompt`: `winner` is "a", "b" or "tie"."""

    prompt: str
    a: Side
    b: Side
    winner: str
    time: str


def _side_problem(side: Side) -> str | None:
    if not isinstance(side.run, str) or not RUN_NAME_PATTERN.fullmatch(side.run):
        return f"invalid run name {side.run!r}"
    if not isinstance(side.variant, str) or not VARIANT_FILE_PATTERN.fullmatch(side.variant):
        return f"invalid variant {side.variant!r}"
    if not isinstance(side.answer, str) or len(side.answer) > MAX_ANSWER_CHARS:
        return f"the answer must be text of at most {MAX_ANSWER_CHARS} characters"
    return None


def vote_problem(vote: Vote) -> str | None:
    """Why `vote` cannot be stored or counted, or None when it can."""
    if not isinstance(vote.prompt, str) or not vote.prompt.strip() or len(vote.prompt) > MAX_PROMPT_CHARS:
        return f"the prompt must be non-empty text of at most {MAX_PROMPT_CHARS} characters"
    if vote.winner not in WINNERS:
        return f"the winner is a, b or tie (got {vote.winner!r})"
    if vote.a.key == vote.b.key:
        return f"both answers are {vote.a.key}'s: a vote compares two contenders"
    return _side_problem(vote.a) or _side_problem(vote.b)


def _side_record(side: Side) -> dict[str, str]:
    return {
        "run": side.run,
        "variant": side.variant,
        "answer": side.answer,
        "answer_sha256": answer_sha256(side.answer),
    }


def votes_path(root: Path) -> Path:
    """Where the votes of the runs under `root` are kept."""
    return root / ARENA_DIR / VOTES_FILE


@contextlib.contextmanager
def _votes_lock(root: Path) -> Iterator[None]:
    folder = root / ARENA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if not is_real_dir(folder):
        raise ArenaError(f"{folder} is not a folder (a link is not followed): no vote is stored there")
    with os.fdopen(open_regular(folder / f".{VOTES_FILE}.lock", os.O_RDWR | os.O_CREAT), "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cast_vote(root: Path, prompt: str, a: Side, b: Side, winner: str) -> Vote:
    """Append a person's vote to the votes file under its lock; ArenaError when it is invalid or
    cannot be written."""
    vote = Vote(prompt, a, b, winner, now_iso())
    if problem := vote_problem(vote):
        raise ArenaError(problem)
    record = {
        "time": vote.time,
        "prompt": prompt,
        "prompt_sha256": answer_sha256(prompt),
        "a": _side_record(a),
        "b": _side_record(b),
        "winner": winner,
    }
    try:
        with _votes_lock(root):
            append_jsonl(votes_path(root), record)
    except OSError as exc:
        raise ArenaError(f"the vote was not stored: {first_line(exc)}") from None
    return vote


def _side_of(record: object) -> Side | None:
    if not isinstance(record, dict):
        return None
    side = Side(record.get("run"), record.get("variant"), record.get("answer"))  # type: ignore[arg-type]
    if _side_problem(side) or record.get("answer_sha256") != answer_sha256(side.answer):
        return None
    return side


def parse_vote(record: dict[str, Any]) -> Vote | None:
    """The vote a votes.jsonl record holds, or None when any field is missing, malformed, or an
    answer or the prompt does not match its hash."""
    a, b = _side_of(record.get("a")), _side_of(record.get("b"))
    prompt, when = record.get("prompt"), record.get("time")
    if a is None or b is None or not isinstance(prompt, str) or not isinstance(when, str):
        return None
    if record.get("prompt_sha256") != answer_sha256(prompt):
        return None
    vote = Vote(prompt, a, b, record.get("winner"), when)  # type: ignore[arg-type]
    return None if vote_problem(vote) else vote


def read_votes(root: Path) -> tuple[list[Vote], int]:
    """The stored votes, oldest first, and how many lines were skipped (torn, planted or invalid).
    FileProblem when the votes file cannot be opened as a regular file or is over its size cap."""
    records, skipped = read_jsonl(votes_path(root), MAX_VOTES_BYTES)
    votes = [vote for vote in map(parse_vote, records) if vote is not None]
    return votes, skipped + len(records) - len(votes)


def bradley_terry(games: np.ndarray, entries: int, iterations: int = 100) -> np.ndarray:
    """Strengths of `entries` players from `games`, rows (i, j, score of i in [0, 1]): the maximum of
    the Bradley-Terry (logistic) likelihood in log-strengths by Newton's method, with one half-won
    virtual game per player against a fixed player of strength 1, which also fixes the scale.

    At the maximum each player's expected score equals its actual score, virtual game included:
    sum_j n_ij p_i / (p_i + p_j) + p_i / (p_i + 1) = W_i (the equations Hunter's MM iteration
    solves, far more slowly when votes are many)."""
    first, second, score = games[:, 0].astype(int), games[:, 1].astype(int), games[:, 2]
    wins = np.full(entries, 0.5)  # the virtual game's half win
    np.add.at(wins, first, score)
    np.add.at(wins, second, 1.0 - score)
    pairs = np.zeros((entries, entries))
    np.add.at(pairs, (first, second), 1.0)
    np.add.at(pairs, (second, first), 1.0)
    theta = np.zeros(entries)
    for _ in range(iterations):
        expected = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # P(i beats j)
        virtual = 1.0 / (1.0 + np.exp(-theta))
        gradient = wins - (pairs * expected).sum(axis=1) - virtual
        curvature = pairs * expected * (1.0 - expected)
        hessian = curvature - np.diag(curvature.sum(axis=1) + virtual * (1.0 - virtual))
        step = np.clip(np.linalg.solve(hessian, gradient), -2.0, 2.0)  # the likelihood is concave
        theta -= step
        if np.max(np.abs(step)) < TOLERANCE:
            break
    return np.exp(theta)


@dataclass(frozen=True)
class LeaderRow:
    """One entry of the leaderboard: a run's variant, its score on the Elo scale with a 95%
    bootstrap interval (None under MIN_INTERVAL_VOTES votes), and its votes."""

    entry: str
    score: float
    low: float | None
    high: float | None
    votes: int
    wins: int
    losses: int
    ties: int


def _elo(strength: np.ndarray) -> np.ndarray:
    return ELO_BASE + ELO_SCALE * np.log10(strength)


def leaderboard(votes: Sequence[Vote], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[LeaderRow]:
    """Every voted-on entry, best score first."""
    names = sorted({side.key for vote in votes for side in (vote.a, vote.b)})
    if not names:
        return []
    index = {name: number for number, name in enumerate(names)}
    score_of = {"a": 1.0, "b": 0.0, "tie": 0.5}
    games = np.array([(index[v.a.key], index[v.b.key], score_of[v.winner]) for v in votes], dtype=float)
    scores = _elo(bradley_terry(games, len(names)))
    rng = np.random.default_rng(seed)
    resampled = np.array(
        [
            _elo(bradley_terry(games[rng.integers(0, len(games), len(games))], len(names)))
            for _ in range(samples)
        ]
    )
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    rows = []
    for name, number in index.items():
        won = sum(
            (v.a.key == name and v.winner == "a") or (v.b.key == name and v.winner == "b") for v in votes
        )
        tied = sum(name in (v.a.key, v.b.key) and v.winner == "tie" for v in votes)
        played = sum(name in (v.a.key, v.b.key) for v in votes)
        interval = played >= MIN_INTERVAL_VOTES
        rows.append(
            LeaderRow(
                name,
                float(scores[number]),
                float(low[number]) if interval else None,
                float(high[number]) if interval else None,
                played,
                won,
                played - won - tied,
                tied,
            )
        )
    return sorted(rows, key=lambda row: (-row.score, row.entry))


def preference_records(votes: Sequence[Vote]) -> list[dict[str, Any]]:
    """The votes as a preference dataset in trl's conversational format (what DPOTrainer reads):
    `prompt` the user's turn, `chosen` and `rejected` the assistant's answers. Ties, and votes
    between two identical answers, say nothing about a preference and are left out."""
    records = []
    for vote in votes:
        if vote.winner == "tie" or vote.a.answer == vote.b.answer:
            continue
        chosen, rejected = (vote.a, vote.b) if vote.winner == "a" else (vote.b, vote.a)
        records.append(
            {
                "prompt": messages_for(vote.prompt),
                "chosen": [{"role": "assistant", "content": chosen.answer}],
                "rejected": [{"role": "assistant", "content": rejected.answer}],
            }
        )
    return records


def preference_jsonl(votes: Sequence[Vote]) -> str:
    """preference_records as JSON lines, the file a DPO training reads."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in preference_records(votes))
