"""Two training processes (DDP under accelerate launch, gloo on the CPU) against one, with the
same global batch: the overhead of the distributed run per step, not a speed-up.

Run: .venv/bin/python bench/ddp.py [--rounds N] [--steps N] [--skip N] (make bench runs it).
Each round runs, one after the other (which goes first alternates), `python -m core train` on
the cpu_smoke preset (the tiny local Llama, data/sample_sharegpt.jsonl) with
`num_processes=2 batch_size=1` and with `num_processes=1 batch_size=2` (gradient accumulation 4
both: a global batch of 8 sequences), each rank with one torch thread. Step times come from the
runs' events.jsonl (rank 0's, which waits for the other rank at every step). Prints the medians
of the steady-state step time (the first steps skipped) and of the process's wall time, the
ratios two / one, and the largest difference of the per-step losses (the two runs train on the
same batches).

Two processes on two cores share them with each other and with anything else running, and gloo
runs over loopback TCP: the figure is the cost of the distributed machinery on a CPU, not what
two GPUs would gain. Nothing here was run on GPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.training import SINGLE_THREAD, ArmResult, step_seconds  # noqa: E402
from core.store.files import read_jsonl  # noqa: E402
from core.store.paths import CACHE_DIR_ENV, PROJECT_DIR  # noqa: E402
from core.store.runs import EVENTS_FILE, TRAIN_LOG, read_run_folder  # noqa: E402
from core.train.tiny import ensure_tiny_model  # noqa: E402

PRESET = "cpu_smoke"
ARMS = {"two": ["num_processes=2", "batch_size=1"], "one": ["num_processes=1", "batch_size=2"]}
"""The two arms' settings: the same global batch, batch_size x gradient accumulation x processes."""
COMMON = ["gradient_accumulation_steps=4", "warmup_steps=0", "logging_steps=1", "save_steps=1000"]


def run_arm(root: Path, name: str, settings: list[str], steps: int, env: dict[str, str]) -> ArmResult:
    """One training job of `steps` steps with `settings`, as the dashboard's jobs run it."""
    command = [sys.executable, "-m", "core", "--runs-dir", str(root), "train", name, "--preset", PRESET]
    for setting in [*COMMON, f"max_steps={steps}", *settings]:
        command += ["--set", setting]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    run = read_run_folder(root / name)
    if result.returncode or run.state != "completed":
        raise SystemExit(f"{name} ended {run.state}: {(root / name / TRAIN_LOG).read_text()[-2000:]}")
    events, _ = read_jsonl(root / name / EVENTS_FILE)
    if [event["step"] for event in events] != list(range(1, steps + 1)):
        raise SystemExit(f"{name}: not one event per step")
    return ArmResult(
        step_seconds([event["elapsed_s"] for event in events]), wall, [event["loss"] for event in events]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="training runs per arm, alternating (default 5)"
    )
    parser.add_argument("--steps", type=int, default=30, help="steps per run (default 30)")
    parser.add_argument("--skip", type=int, default=3, help="first steps of each run left out (default 3)")
    args = parser.parse_args()
    if not 0 <= args.skip < args.steps:
        parser.error(f"--skip must be from 0 to {args.steps - 1}")
    step_times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    walls: dict[str, list[float]] = {arm: [] for arm in ARMS}
    gaps = []
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, **SINGLE_THREAD, CACHE_DIR_ENV: str(Path(folder) / "cache")}
        os.environ.update(env)  # the tiny model is built here, once, into the cache both arms read
        ensure_tiny_model()
        for index in range(args.rounds):  # alternating, so that a busy moment hits both alike
            order = list(ARMS) if index % 2 == 0 else list(ARMS)[::-1]
            results = {
                arm: run_arm(Path(folder) / "runs", f"{arm}-{index + 1}", ARMS[arm], args.steps, env)
                for arm in order
            }
            for arm, result in results.items():
                step_times[arm] += result.step_s[args.skip :]
                walls[arm].append(result.wall_s)
            gaps.append(max(abs(a - b) for a, b in zip(results["two"].losses, results["one"].losses)))
            print(
                f"round {index + 1}: "
                + "; ".join(
                    f"{arm} step {statistics.median(results[arm].step_s[args.skip :]):.3f} s, "
                    f"wall {results[arm].wall_s:.1f} s"
                    for arm in ARMS
                )
                + f"; largest difference of the per-step losses {gaps[-1]:.2g}"
            )
    print(
        f"\n{PRESET} preset, tiny-llama on the CPU, global batch 8 (two processes x 1 x 4 against one x 2 x 4), "
        f"one torch thread per process, {args.steps} steps per run, {args.rounds} runs per arm, "
        f"{os.cpu_count()} CPU cores"
    )
    for label, times in (("steady-state step time", step_times), ("process wall time", walls)):
        two, one = statistics.median(times["two"]), statistics.median(times["one"])
        print(f"{label} median: two processes {two:.3f} s, one {one:.3f} s, ratio two / one {two / one:.2f}")
    print(
        f"(step times: steps {args.skip + 1}-{args.steps} of every run; largest loss difference {max(gaps):.2g})"
    )


if __name__ == "__main__":
    main()
