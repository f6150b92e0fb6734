"""Data stats: measuring a dataset (core.data.stats.row_stats) against a bare tokenizer loop.

Run: make bench (or .venv/bin/python bench/data.py [--rows N] [--rounds N]). Writes N synthetic
rows in FineTome's schema (core.data.synthetic; 100,000 by default) and, each round in a fresh
cache, times (which goes first alternates):
- bare: the rows read with json, each batch of 1,000 rendered with the tiny Llama's chat template
  and tokenized with `tokenizer(texts)`: the least work that gives token lengths with a template;
- ours, first look: row_stats from the file (datasets loads it, a batched map measures tokens,
  answer tokens, turns, problems and content hashes, written to the fingerprint cache);
- ours, second look: row_stats again (everything read from the cache).
Prints the medians and the ratio ours / bare, measured in this run. Targets: ratio within 1.2x,
a second look under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.update(
    OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"
)

from core.data.sources import DataSource  # noqa: E402
from core.data.stats import load_tokenizer, row_stats  # noqa: E402
from core.data.synthetic import write_synthetic  # noqa: E402
from core.store.paths import CACHE_DIR_ENV  # noqa: E402
from core.train.data import standardize_conversation  # noqa: E402

RATIO_TARGET, CACHED_TARGET_S = 1.2, 1.0
BATCH = 1000


def bare(path: Path, tokenizer) -> float:
    """Seconds to read the rows and tokenize them, rendered with the chat template, in batches."""
    started = time.perf_counter()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for start in range(0, len(rows), BATCH):
        batch = [standardize_conversation(row) for row in rows[start : start + BATCH]]
        texts = tokenizer.apply_chat_template(batch, tokenize=False)
        tokenizer(texts, add_special_tokens=False)
    return time.perf_counter() - started


def ours(path: Path, tokenizer) -> tuple[float, float]:
    """Seconds of row_stats on a first look and on a second one."""
    started = time.perf_counter()
    first = row_stats(DataSource(str(path)), tokenizer, "tiny-llama")
    middle = time.perf_counter()
    second = row_stats(DataSource(str(path)), tokenizer, "tiny-llama")
    assert second.measured_shards == 0 and first.measured_shards > 0
    return middle - started, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = write_synthetic(folder / "rows.jsonl", args.rows)
        os.environ[CACHE_DIR_ENV] = str(folder / "cache-0")
        tokenizer = load_tokenizer("tiny-llama")
        bare_s, first_s, second_s = [], [], []
        for index in range(args.rounds):
            os.environ[CACHE_DIR_ENV] = str(folder / f"cache-{index + 1}")  # a fresh fingerprint cache
            if index % 2:
                first, second = ours(path, tokenizer)
                bare_s.append(bare(path, tokenizer))
            else:
                bare_s.append(bare(path, tokenizer))
                first, second = ours(path, tokenizer)
            first_s.append(first)
            second_s.append(second)
            print(
                f"round {index + 1}: bare {bare_s[-1]:.2f} s, ours {first:.2f} s, second look {second:.3f} s"
            )
    ratio = statistics.median(first_s) / statistics.median(bare_s)
    cached = statistics.median(second_s)
    print(
        f"{args.rows:,} rows, medians: bare {statistics.median(bare_s):.2f} s, ours {statistics.median(first_s):.2f} s, "
        f"ratio {ratio:.2f}x (target <= {RATIO_TARGET}x); second look {cached:.3f} s (target < {CACHED_TARGET_S:.0f} s)"
    )


if __name__ == "__main__":
    main()
