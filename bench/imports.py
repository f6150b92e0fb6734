"""Importing an experiments_log.csv of 10,000 rows: the bulk import against the per-run path it
replaced, and peak memory for a file at the size cap.

Run: make bench (or .venv/bin/python bench/imports.py [--rows N] [--baseline-rows N] [--rounds N]).
Each measurement imports into a fresh temporary runs root. Prints medians of: parsing the rows
alone; import_log (bulk: one staging folder, one sync); the per-run path import_log took before
(create_run per row: a staging folder, three synced files and a rename each) on fewer rows,
scaled to the same count; and the ratio bulk / per-run, all measured in this run, alternating.
Then the peak memory (tracemalloc) of import_log on a file of MAX_IMPORT_BYTES with
MAX_IMPORT_ROWS rows. Target: 10,000 rows in under 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.store.experiments_log import (
    EXTRA_COLUMNS,
    LOG_COLUMNS,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    import_log,
    parse_log,
    run_documents,
)
from core.store.runs import create_run

TARGET_S = 10.0


def log_text(rows: int, note_chars: int = 10) -> str:
    """An experiments_log.csv (schema and extra columns) of `rows` runs with notes of `note_chars`."""
    lines = [",".join(LOG_COLUMNS + EXTRA_COLUMNS)]
    for index in range(rows):
        note = f"row {index} ".ljust(note_chars, "x")[:note_chars]
        lines.append(
            f"run_{index:05d},unsloth/Llama-3.2-1B-Instruct-bnb-4bit,train[:{1000 * (index % 30 + 1)}],"
            f"{[8, 16, 32, 64][index % 4]},600,{0.8 + index % 97 / 1000},{2594.04 + index},2.564,1.361,"
            f"16,mlabonne/FineTome-100k,Tesla T4,{note}"
        )
    return "\n".join(lines) + "\n"


def per_run_import(root: Path, text: str) -> int:
    """The import as it was before the bulk path: create_run for each row; runs created."""
    rows, _ = parse_log(text)
    for row in rows:
        config, status, metrics = run_documents(row, "bench.csv")
        create_run(root, row.values["run_name"], config, status=status, metrics=metrics)
    return len(rows)


def bulk_import(root: Path, text: str) -> int:
    """import_log; runs created (the bench stops if any row was not imported)."""
    report = import_log(root, text, source="bench.csv")
    if report.problems or report.existing:
        raise SystemExit(f"the import did not go through: {report.summary()}")
    return len(report.imported)


def timed(step, text: str, root: Path) -> float:
    """Seconds `step` takes to import `text` into the fresh runs root `root`."""
    started = time.perf_counter()
    step(root, text)
    return time.perf_counter() - started


def peak_memory_at_cap(root: Path) -> tuple[int, int]:
    """Peak bytes allocated while import_log reads a file at the size cap (MAX_IMPORT_ROWS rows,
    notes long enough to bring it to MAX_IMPORT_BYTES), and the file's size in bytes."""
    bare = len(log_text(MAX_IMPORT_ROWS, note_chars=0))  # ASCII: characters are bytes
    text = log_text(MAX_IMPORT_ROWS, note_chars=(MAX_IMPORT_BYTES - bare) // MAX_IMPORT_ROWS)
    tracemalloc.start()
    bulk_import(root, text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, len(text.encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--rows", type=int, default=MAX_IMPORT_ROWS, help="rows imported in bulk (default 10000)"
    )
    parser.add_argument(
        "--baseline-rows", type=int, default=500, help="rows imported per run, scaled up (default 500)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each (default 3)")
    args = parser.parse_args()
    text, baseline_text = log_text(args.rows), log_text(args.baseline_rows)
    scale = args.rows / args.baseline_rows
    parse, bulk, per_run = [], [], []
    # Each measurement gets a fresh runs root, all deleted at the end: deleting thousands of files
    # between measurements (on a file system mounted with `discard`, a discard per freed block)
    # would slow the next one.
    with tempfile.TemporaryDirectory() as folder:
        roots = (Path(folder) / f"runs-{index}" for index in range(2 * args.rounds + 1))
        for _ in range(args.rounds):  # alternating, so that a busy moment hits both alike
            started = time.perf_counter()
            parse_log(text)
            parse.append(time.perf_counter() - started)
            bulk.append(timed(bulk_import, text, next(roots)))
            per_run.append(timed(per_run_import, baseline_text, next(roots)) * scale)
        peak, size = peak_memory_at_cap(next(roots))
    ours, before = statistics.median(bulk), statistics.median(per_run)
    print(
        f"{args.rows:,} rows ({len(text.encode('utf-8')):,} bytes), {os.cpu_count()} CPU cores, {args.rounds} rounds"
    )
    print(f"parse only: median {statistics.median(parse):.2f} s")
    print(f"bulk import: median {ours:.2f} s ({args.rows / ours:,.0f} runs/s)")
    print(
        f"per-run create_run (the path before): median {before:.2f} s, from {args.baseline_rows} rows x {scale:g}"
        f" ({args.rows / before:,.0f} runs/s)"
    )
    print(f"ratio bulk / per-run: {ours / before:.2f}")
    print(
        f"peak memory importing a file at the cap ({MAX_IMPORT_ROWS:,} rows, {size:,} bytes): "
        f"{peak / 2**20:.1f} MB allocated, {peak / size:.1f} x the file"
    )
    verdict = "met" if ours < TARGET_S else "NOT met"
    print(f"target: {args.rows:,} rows imported in under {TARGET_S:g} s: {verdict}")


if __name__ == "__main__":
    main()
