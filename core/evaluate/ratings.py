"""A person's ratings of answers, kept in `<run>/ratings.json`.

variant -> prompt id -> `{"rating": 1-5 or null, "note", "answer_sha256"}`, the last being the
SHA-256 of the answer text that was rated. A rating applies only to that answer: once a new
evaluation gives a different answer, the rating is no longer shown (rating_applies), though it
stays in the file until the person rates the new answer. Entries written before answer_sha256
was recorded cannot be matched; they apply to whatever answer is there, as they did before.
The file also names the side (core.store.paths.runs_root_side) whose dashboard wrote it last,
under SIDE_KEY: a sync (core.remote) copies it only from that side.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from core.evaluate.answers import VARIANT_FILE_PATTERN
from core.evaluate.prompt_sets import NAME_PATTERN
from core.store.files import (
    FileMissing,
    FileProblem,
    open_regular,
    read_json_object,
    write_json_atomic,
)
from core.store.paths import runs_root_side
from core.store.runs import (
    RATINGS_FILE,
)

MAX_NOTE_CHARS = 2000
MAX_RATINGS_BYTES = 8 << 20  # some 4,000 notes of 2,000 characters


ANSWER_HASH_FIELD = "answer_sha256"  # in ratings.json: which answer a rating rates
SIDE_KEY = "_side"  # in ratings.json: the side that wrote it (not a variant: variants match a pattern)


class RatingError(ValueError):
    """A rating or note that cannot be saved."""


def answer_sha256(answer: str) -> str:
    """What ties a rating to the answer it rates: the SHA-256 (hex) of the answer's UTF-8 text."""
    return hashlib.sha256(answer.encode("utf-8", errors="surrogatepass")).hexdigest()


def rating_applies(entry: Mapping[str, Any], answer: str) -> bool:
    """True when the rating `entry` (from load_ratings) was given to `answer`, or predates answer_sha256."""
    rated = entry.get(ANSWER_HASH_FIELD)
    return rated is None or rated == answer_sha256(answer)


def is_rating(value: object) -> bool:
    """True for a rating: a whole number from 1 to 5."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5


def _valid_rating(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    rating, note, rated = entry.get("rating"), entry.get("note", ""), entry.get(ANSWER_HASH_FIELD)
    return (
        (rating is None or is_rating(rating))
        and isinstance(note, str)
        and (rated is None or isinstance(rated, str))
    )


def load_ratings(run_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> prompt id -> {"rating": 1-5 or None, "note": str, "answer_sha256": str (absent in old
    entries)}; a bad file or entry reads as none. rating_applies says whether one rates a given answer."""
    try:
        return _ratings_in(run_path)
    except FileProblem:
        return {}


def _ratings_in(run_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """load_ratings, raising FileProblem when ratings.json exists but cannot be read."""
    try:
        data = read_json_object(run_path / RATINGS_FILE, MAX_RATINGS_BYTES)
    except FileMissing:
        return {}
    ratings: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, prompts in data.items():
        if not isinstance(prompts, dict):
            continue
        kept = {}
        for prompt_id, entry in prompts.items():
            if _valid_rating(entry):
                kept[prompt_id] = {"rating": entry.get("rating"), "note": entry.get("note", "")}
                if entry.get(ANSWER_HASH_FIELD) is not None:
                    kept[prompt_id][ANSWER_HASH_FIELD] = entry[ANSWER_HASH_FIELD]
        if kept:
            ratings[variant] = kept
    return ratings


@contextlib.contextmanager
def ratings_lock(run_path: Path) -> Iterator[None]:
    """Hold the run's ratings lock: one writer of ratings.json at a time (a page saving a rating,
    a sync replacing another side's copy)."""
    with os.fdopen(open_regular(run_path / f".{RATINGS_FILE}.lock", os.O_RDWR | os.O_CREAT), "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ratings_side(run_path: Path) -> str | None:
    """The side that wrote the run's ratings.json (None when it does not say, or is unreadable)."""
    try:
        side = read_json_object(run_path / RATINGS_FILE, MAX_RATINGS_BYTES).get(SIDE_KEY)
    except FileProblem:
        return None
    return side if isinstance(side, str) else None


def save_rating(
    run_path: Path, variant: str, prompt_id: str, rating: int | None, note: str, *, answer: str
) -> None:
    """Store a person's rating (1-5, or None) and note for `answer`, the text they rated; no rating
    and no note removes it."""
    if not isinstance(answer, str):
        raise RatingError("the rated answer must be text")
    if not isinstance(variant, str) or not VARIANT_FILE_PATTERN.fullmatch(variant):
        raise RatingError(f"unknown variant {variant!r}: adapter, base or gguf-<file>")
    if not isinstance(prompt_id, str) or not NAME_PATTERN.fullmatch(prompt_id):
        raise RatingError(f"invalid prompt id {prompt_id!r}")
    if rating is not None and not is_rating(rating):
        raise RatingError(f"a rating is a whole number from 1 to 5, or none (got {rating!r})")
    if not isinstance(note, str):
        raise RatingError("a note must be text")
    if len(note) > MAX_NOTE_CHARS:
        raise RatingError(f"the note is {len(note)} characters long (at most {MAX_NOTE_CHARS})")
    if not run_path.is_dir():
        raise RatingError(f"no run folder at {run_path}")
    with ratings_lock(run_path):
        try:
            ratings = _ratings_in(run_path)
        except FileProblem as exc:  # saving now would overwrite every rating in it
            raise RatingError(f"{exc}: the ratings there are kept and this one is not saved") from None
        prompts = ratings.setdefault(variant, {})
        if rating is None and not note.strip():
            prompts.pop(prompt_id, None)
        else:
            prompts[prompt_id] = {"rating": rating, "note": note, ANSWER_HASH_FIELD: answer_sha256(answer)}
        kept = {v: p for v, p in ratings.items() if p}
        write_json_atomic(run_path / RATINGS_FILE, {SIDE_KEY: runs_root_side(run_path.parent), **kept})
