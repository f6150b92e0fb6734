"""Synthetic conversations in FineTome-100k's schema, for tests, benchmarks and the demo.

This machine cannot download FineTome-100k, so the project ships rows written by this script:
`conversations` (ShareGPT from/value turns), `source` and `score`, the columns FineTome carries.
They are NOT FineTome: the questions and answers are filled from templates below, the sources
are named `synthetic-*`, and the score is drawn from a distribution, loosely tied to length,
that spans FineTome's range (about 3 to 5.2). A few exact duplicates and multi-turn rows are
mixed in so filters have something to find. `python -m core.data.synthetic OUT.jsonl ROWS`
writes a file; data/sample_scored.jsonl is `python -m core.data.synthetic data/sample_scored.jsonl 600`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

SEED = 20261130
TOPICS = (
    "photosynthesis", "the water cycle", "plate tectonics", "binary search", "compound interest",
    "the French Revolution", "vaccines", "black holes", "supply and demand", "recursion",
    "the immune system", "climate change", "hash tables", "the Roman Empire", "electric circuits",
    "machine learning", "volcanoes", "the stock market", "DNA replication", "gradient descent",
)  # fmt: skip
QUESTIONS = (
    "Can you explain {t} in simple terms?",
    "What is {t}, and why does it matter?",
    "Give me a short overview of {t}.",
    "How would you teach {t} to a beginner?",
    "What are common misconceptions about {t}?",
)
SENTENCES = (
    "At its core, {t} is about how parts of a system interact over time.",
    "A good way to picture {t} is to follow one concrete example step by step.",
    "Historically, people understood {t} only after careful measurement.",
    "The key idea behind {t} is that small causes can add up to large effects.",
    "Experts usually describe {t} with a simple model and then refine it.",
    "One practical consequence of {t} shows up in everyday decisions.",
    "Students often confuse {t} with related ideas, so definitions matter.",
    "In short, {t} rewards patience and a clear vocabulary.",
)
SOURCES = {"synthetic-qa": 0.5, "synthetic-howto": 0.3, "synthetic-chat": 0.2}
SYSTEM = "You are a patient tutor who answers clearly."


def _answer(rng: random.Random, topic: str) -> str:
    return " ".join(rng.choice(SENTENCES).format(t=topic) for _ in range(rng.randint(1, 12)))


def synthetic_row(rng: random.Random) -> dict[str, Any]:
    """One synthetic row: a conversation of one to three exchanges, its source and score."""
    topic = rng.choice(TOPICS)
    source = rng.choices(list(SOURCES), weights=list(SOURCES.values()))[0]
    turns = [{"from": "system", "value": SYSTEM}] if rng.random() < 0.2 else []
    for exchange in range(rng.choices((1, 2, 3), weights=(0.7, 0.2, 0.1))[0]):
        question = rng.choice(QUESTIONS).format(t=topic) if exchange == 0 else "Can you say more?"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": _answer(rng, topic)}]
    length = sum(len(turn["value"]) for turn in turns)
    score = min(5.2, max(3.0, rng.gauss(4.2 + min(length, 1500) / 3000, 0.35)))
    return {"conversations": turns, "source": source, "score": round(score, 4)}


def synthetic_rows(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    """`count` synthetic rows; about 1% repeat an earlier row exactly."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        rows.append(dict(rng.choice(rows)) if rows and rng.random() < 0.01 else synthetic_row(rng))
    return rows


def write_synthetic(path: Path, count: int, seed: int = SEED) -> Path:
    """Write `count` synthetic rows to a JSON-lines file at `path`."""
    lines = (json.dumps(row, ensure_ascii=False) for row in synthetic_rows(count, seed))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit("usage: python -m core.data.synthetic OUT.jsonl ROWS")
    write_synthetic(Path(sys.argv[1]), int(sys.argv[2]))
