"""Compare page render time with many runs: 200 runs x 1000 logged steps against 10 runs.

Run: make bench (or .venv/bin/python bench/compare.py [--runs N] [--steps N] [--rounds N]).
Writes run folders as training and eval write them (config, status, metrics, events.jsonl,
eval/adapter.jsonl) into a temporary runs root, renders pages/3_Compare.py with Streamlit's
AppTest and prints medians and the ratio many / few, both measured in this run, alternating
between the two sizes. A first render starts with empty caches (every file is read); a warm
rerun follows a move of the smoothing slider (every drawn curve is smoothed and downsampled
again, files come from the cache). Target: warm ratio under 2 (no noticeable delay).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from core.evaluate.prompt_sets import LAB_SET_FILE, load_prompt_set
from core.store.files import write_jsonl_atomic
from core.store.paths import PROJECT_DIR, RUNS_DIR_ENV
from core.store.runs import EVENTS_FILE, create_run, initial_status
from core.store.seed import SEED_MARKER
from core.train.config import default_config

PAGE = "pages/3_Compare.py"
PROMPT_IDS = tuple(prompt.id for prompt in load_prompt_set(LAB_SET_FILE).prompts)  # the lab's 10
NOTICEABLE_S = 0.5  # a rerun below half a second reads as immediate on a page of charts


def write_runs(root: Path, count: int, steps: int) -> None:
    """`count` completed runs with `steps` logged steps each and answers to the lab's 10 prompts,
    written into `root` (created if missing; runs already there stay)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / SEED_MARKER).write_text("")
    rng = np.random.default_rng(0)
    for index in range(count):
        step = np.arange(1, steps + 1)
        loss = 0.9 + 1.2 * np.exp(-5 * step / steps) + rng.normal(0, 0.05, steps)
        events = [
            {
                "step": int(s),
                "loss": round(float(value), 4),
                "learning_rate": 2e-4 * (1 - s / steps),
                "grad_norm": 0.5,
                "epoch": round(s * 8 / 10000, 4),
                "elapsed_s": round(s * 4.3, 3),
                "tokens_seen": int(s) * 8000,
                "memory_gb": 3.2,
            }
            for s, value in zip(step, loss)
        ]
        metrics = {
            "train_loss": round(float(loss.mean()), 4),
            "final_loss": events[-1]["loss"],
            "train_runtime_s": steps * 4.3,
            "steps": steps,
            "tokens_seen": steps * 8000,
            "tokens_per_s": 1860.5,
            "peak_memory_gb": 3.5 + index % 7 * 0.1,
            "lora_memory_gb": 1.2,
            "memory_measure": "cuda_reserved",
            "device": "Tesla T4",
            "device_memory_gb": 15.0,
        }
        config = {
            **default_config(),
            "lora_r": [8, 16, 32, 64][index % 4],
            "learning_rate": 1e-4 * (1 + index % 5),
            "max_steps": steps,
        }
        path = create_run(
            root,
            f"run_{index:03d}",
            config,
            status={**initial_status("completed", steps), "step": steps},
            metrics=metrics,
        )
        write_jsonl_atomic(path / EVENTS_FILE, events)
        (path / "eval").mkdir()
        write_jsonl_atomic(
            path / "eval" / "adapter.jsonl",
            [
                {
                    "variant": "adapter",
                    "prompt_set": "lab",
                    "prompt_id": prompt_id,
                    "prompt": f"Prompt {prompt_id}",
                    "answer": "An answer. " * 30,
                    "checks": [{"name": "leakage", "passed": True, "detail": "none"}],
                    "passed": (index + number) % 3 != 0,
                    "latency_s": 1.5,
                    "new_tokens": 90,
                    "max_new_tokens": 256,
                    "model": "base + adapter",
                    "created_at": "2026-11-28T15:00:00Z",
                }
                for number, prompt_id in enumerate(PROMPT_IDS)
            ],
        )


def measure(root: Path, reruns: int) -> tuple[float, list[float], int]:
    """Seconds of a first render (empty caches) and of `reruns` warm reruns; runs picked."""
    os.environ[RUNS_DIR_ENV] = str(root)
    st.cache_data.clear()
    app = AppTest.from_file(str(PROJECT_DIR / "Home.py"), default_timeout=600)
    app.switch_page(PAGE)  # as a server runs it: Home.py is the entry point
    started = time.perf_counter()
    app.run()
    cold = time.perf_counter() - started
    if app.exception:
        raise SystemExit(f"the page failed: {app.exception[0].value}")
    warm = []
    for rerun in range(reruns):
        next(slider for slider in app.slider if slider.label == "Smoothing").set_value(0.5 + rerun / 100)
        started = time.perf_counter()
        app.run()
        warm.append(time.perf_counter() - started)
    picked = len(next(box for box in app.multiselect if box.label == "Runs").value)
    return cold, warm, picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="runs in the large root (default 200)")
    parser.add_argument("--few", type=int, default=10, help="runs in the small root (default 10)")
    parser.add_argument("--steps", type=int, default=1000, help="logged steps per run (default 1000)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="first renders per size, alternating (default 5)"
    )
    parser.add_argument(
        "--reruns", type=int, default=3, help="warm reruns after each first render (default 3)"
    )
    args = parser.parse_args()
    sizes = (args.few, args.runs)
    with tempfile.TemporaryDirectory() as folder:
        roots = {count: Path(folder) / f"runs-{count}" for count in sizes}
        for count, root in roots.items():
            started = time.perf_counter()
            write_runs(root, count, args.steps)
            print(f"wrote {count} runs x {args.steps} steps in {time.perf_counter() - started:.1f} s")
            measure(root, 1)  # imports and Streamlit's first-run work are not the page's cost
        cold: dict[int, list[float]] = {count: [] for count in sizes}
        warm: dict[int, list[float]] = {count: [] for count in sizes}
        for _ in range(args.rounds):  # alternating, so that a busy moment hits both sizes alike
            for count in sizes:
                first, reruns, picked = measure(roots[count], args.reruns)
                cold[count].append(first)
                warm[count] += reruns
    for count in sizes:
        print(
            f"{count} runs (all picked, {min(count, 10)} curves drawn): first render median "
            f"{statistics.median(cold[count]):.3f} s, warm rerun median {statistics.median(warm[count]):.3f} s"
        )
    print(
        f"\n{os.cpu_count()} CPU cores, {args.rounds} first renders and {args.rounds * args.reruns} warm reruns per size"
    )
    for label, times in (("warm rerun", warm), ("first render", cold)):
        few, many = statistics.median(times[args.few]), statistics.median(times[args.runs])
        print(f"{label} ratio {args.runs} / {args.few} runs: {many / few:.2f} ({many:.3f} s vs {few:.3f} s)")
    slowest = statistics.median(warm[args.runs])
    verdict = "met" if slowest < NOTICEABLE_S else "NOT met"
    print(
        f"target: a warm rerun with {args.runs} runs under {NOTICEABLE_S} s, i.e. no noticeable delay: {verdict}"
    )


if __name__ == "__main__":
    main()
