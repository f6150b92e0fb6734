"""Training step time: our training job against a bare notebook-style SFTTrainer script, both
on the cpu_smoke preset (the tiny local Llama, data/sample_sharegpt.jsonl, 30 steps).

Run: make bench (or .venv/bin/python bench/training.py [--rounds N] [--skip N]). Each round
runs, one after the other (which goes first alternates), `python -m core train NAME --preset
cpu_smoke --set logging_steps=1` (ours: step times from the run's events.jsonl) and
bench/bare_sft.py (bare: plain transformers + peft + trl with the same model, data, LoRA,
trainer settings and answers-only loss; step times from a TrainerCallback), each a fresh
process on the CPU with one torch thread. Prints the medians of the steady-state step time
(the first steps skipped) and of the process's wall time (imports, data, model, training,
saving), and the ratios ours / bare, measured in this run. Target: step time overhead under
5%, wall time overhead under 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bare_sft  # noqa: E402
from core.machine.devices import DeviceFacts
from core.store.files import read_jsonl
from core.store.paths import CACHE_DIR_ENV, PROJECT_DIR
from core.store.runs import EVENTS_FILE, TRAIN_LOG, read_run_folder
from core.train.config import apply_overrides, parse_config
from core.train.plan import plan_training
from core.train.presets import get_preset
from core.train.tiny import SAMPLE_FILE, ensure_tiny_model

PRESET = "cpu_smoke"
OVERRIDES = ["logging_steps=1"]
NOT_IN_BARE = ("base_model", "dataset", "note")
"""Config fields the bare script gets as arguments (model folder, data file) or has no use for."""
STEP_TARGET, WALL_TARGET = 1.05, 1.10
SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def check_same_settings() -> None:
    """Refuse to measure when bare_sft.SETTINGS differ from what our job resolves the preset to on a CPU."""
    config = apply_overrides(get_preset(PRESET).config(), OVERRIDES)
    plan = plan_training(parse_config(config), DeviceFacts(cuda=False))
    expected = {
        **config,
        "backend": plan.backend,
        "optimizer": plan.optimizer,
        "precision": plan.precision,
        "gradient_checkpointing": plan.gradient_checkpointing,
    }
    differ = {
        key: (bare_sft.SETTINGS.get(key), value)
        for key, value in expected.items()
        if key not in NOT_IN_BARE and bare_sft.SETTINGS.get(key) != value
    }
    if differ:
        raise SystemExit(f"bench/bare_sft.py SETTINGS differ from the {PRESET} preset (bare, ours): {differ}")


class ArmResult(NamedTuple):
    """One training process: each step's seconds, the process's wall seconds, the logged losses."""

    step_s: list[float]
    wall_s: float
    losses: list[float]


def step_seconds(elapsed: list[float]) -> list[float]:
    """Each step's seconds from the cumulative training seconds logged after it."""
    return [after - before for before, after in zip([0.0] + elapsed, elapsed)]


def run_ours(root: Path, name: str, env: dict[str, str]) -> ArmResult:
    """Our training job, as the dashboard's jobs run it."""
    command = [sys.executable, "-m", "core", "--runs-dir", str(root), "train", name, "--preset", PRESET]
    command += [argument for override in OVERRIDES for argument in ("--set", override)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    run = read_run_folder(root / name)
    if result.returncode or run.state != "completed":
        raise SystemExit(f"our training ended {run.state}: {(root / name / TRAIN_LOG).read_text()[-2000:]}")
    events, _ = read_jsonl(root / name / EVENTS_FILE)
    return ArmResult(
        step_seconds([event["elapsed_s"] for event in events]), wall, [event["loss"] for event in events]
    )


def run_bare(model_dir: Path, output_dir: Path, env: dict[str, str]) -> ArmResult:
    """The bare notebook-style script."""
    command = [
        sys.executable,
        str(Path(bare_sft.__file__)),
        str(model_dir),
        str(SAMPLE_FILE),
        str(output_dir),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"the bare script failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return ArmResult(report["step_s"], wall, report["losses"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--rounds", type=int, default=5, help="training runs per arm, alternating (default 5)"
    )
    parser.add_argument(
        "--skip", type=int, default=3, help="first steps of each run left out of step times (default 3)"
    )
    args = parser.parse_args()
    check_same_settings()
    steps = bare_sft.SETTINGS["max_steps"]
    if not 0 <= args.skip < steps:
        parser.error(f"--skip must be from 0 to {steps - 1}")
    step_times: dict[str, list[float]] = {"ours": [], "bare": []}
    walls: dict[str, list[float]] = {"ours": [], "bare": []}
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, **SINGLE_THREAD, CACHE_DIR_ENV: str(Path(folder) / "cache")}
        os.environ.update(env)  # the tiny model is built here, once, into the cache both arms read
        model_dir = ensure_tiny_model()
        arms = {
            "ours": lambda number: run_ours(Path(folder) / "runs", f"round-{number}", env),
            "bare": lambda number: run_bare(model_dir, Path(folder) / f"bare-{number}", env),
        }
        for index in range(args.rounds):  # alternating, the first arm too, so a busy moment hits both alike
            order = list(arms) if index % 2 == 0 else list(arms)[::-1]
            results = {arm: arms[arm](index + 1) for arm in order}
            line = []
            for arm in arms:
                result = results[arm]
                if len(result.step_s) != steps:
                    raise SystemExit(f"{arm}: {len(result.step_s)} step times for {steps} steps")
                step_times[arm] += result.step_s[args.skip :]
                walls[arm].append(result.wall_s)
                line.append(
                    f"{arm} step {statistics.median(result.step_s[args.skip :]):.3f} s, "
                    f"wall {result.wall_s:.1f} s"
                )
            gap = max(abs(a - b) for a, b in zip(results["ours"].losses, results["bare"].losses))
            print(
                f"round {index + 1}: "
                + "; ".join(line)
                + f"; largest difference of the per-step losses {gap:.2g}"
            )
    print(
        f"\n{PRESET} preset, tiny-llama on the CPU, one torch thread, {steps} steps per run, {args.rounds} runs "
        f"per arm, {os.cpu_count()} CPU cores"
    )
    for label, times, target in (
        ("steady-state step time", step_times, STEP_TARGET),
        ("process wall time", walls, WALL_TARGET),
    ):
        ours, bare = statistics.median(times["ours"]), statistics.median(times["bare"])
        verdict = "met" if ours / bare < target else "NOT met"
        print(
            f"{label} median: ours {ours:.3f} s, bare {bare:.3f} s, ratio ours / bare {ours / bare:.3f} "
            f"({(ours / bare - 1) * 100:+.1f}%; target under {(target - 1) * 100:+.0f}%: {verdict})"
        )
    print(f"(step times: steps {args.skip + 1}-{steps} of every run)")


if __name__ == "__main__":
    main()
