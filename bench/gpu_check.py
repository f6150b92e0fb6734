"""The GPU check: the T4 path end to end, for the day a CUDA GPU is at hand (make gpu-check).

Trains the lab's T1 for 30 steps twice on the same data slice, once with the unsloth backend
and once with the hf backend (transformers + peft + trl), each in its own `python -m core
train` process, so that the hf run never sees unsloth. Then evaluates the unsloth run on the
lab's prompts and exports it to q8_0, which the export verifies against the merged model
(greedy answers token for token). Prints and writes as JSON (--report):

- per backend: step time, tokens/s, peak memory under both definitions (the lab's and since
  training started; core.train.memory), the first logged losses;
- unsloth against hf: the step-time speedup and the memory ratios, against the goals from
  Unsloth's own claims (at least 1.5x faster, at most 0.7x the memory), and how far apart
  the first losses are (the same data, seed and adapter start: they should start equal and
  track);
- the evaluation's pass count and whether the q8_0 GGUF's greedy answers match the merged
  model's.

Exit status: 0 when every step ran (the goals are reported, not enforced), 1 when a step
failed, 2 when there is no CUDA GPU here. Downloads the base model (twice: 4-bit for
training, 16-bit for the merge) and FineTome-100k; budget about 8 minutes on a T4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.evaluate.answers import load_eval_results, pass_count  # noqa: E402
from core.machine.devices import detect_gpus  # noqa: E402
from core.store.files import read_json_or_empty, read_jsonl  # noqa: E402
from core.store.runs import EVENTS_FILE, METRICS_FILE  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent.parent
BACKENDS = ("unsloth", "hf")
STEPS = 30
SPLIT = "train[:1000]"  # 30 steps x 8 conversations fit in it with room to spare
FIRST_LOSSES = 5
WARM_STEPS = 3  # step times left out of the median: kernels compile, caches fill
SPEEDUP_GOAL = 1.5  # unsloth's step time at least 1.5x shorter than hf's
MEMORY_GOAL = 0.7  # unsloth's peak memory at most 0.7x hf's
STEP_TIMEOUT_S = 900


def core_command(runs_dir: Path, *args: str, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
    """Run `python -m core --runs-dir RUNS ARGS`: its exit status, wall time and last stderr lines."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "core", "--runs-dir", str(runs_dir), *args],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        code, tail = done.returncode, done.stderr.strip().splitlines()[-5:]
    except subprocess.TimeoutExpired:
        code, tail = None, [f"timed out after {timeout:g} s"]
    return {"ok": code == 0, "exit": code, "wall_s": round(time.monotonic() - started, 1), "log_tail": tail}


def train_arguments(name: str, backend: str, steps: int) -> list[str]:
    """`python -m core` arguments that train the lab's T1 for `steps` steps with `backend`."""
    settings = {
        "backend": backend,
        "max_steps": steps,
        "split": SPLIT,
        "logging_steps": 1,
        "save_steps": steps,
    }
    return ["train", name, "--preset", "t1_baseline"] + [
        argument for key, value in settings.items() for argument in ("--set", f"{key}={value}")
    ]


def eval_arguments(name: str) -> list[str]:
    """`python -m core` arguments that answer the lab's prompts with the run's adapter."""
    return ["eval", name, "--variant", "adapter", "--max-new-tokens", "128"]


def export_arguments(name: str) -> list[str]:
    """`python -m core` arguments that export the run to a verified q8_0 GGUF."""
    return ["export", name, "--quant", "q8_0", "--delete-merged"]


def training_summary(run_path: Path) -> dict[str, Any]:
    """What the check reports of one trained run, from its metrics.json and events.jsonl."""
    metrics = read_json_or_empty(run_path / METRICS_FILE)
    events, _ = read_jsonl(run_path / EVENTS_FILE)
    steps, runtime = metrics.get("steps"), metrics.get("train_runtime_s")
    marks = [(e["step"], e["elapsed_s"]) for e in events if isinstance(e.get("elapsed_s"), (int, float))]
    step_times = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(marks, marks[1:]) if s1 > s0][
        WARM_STEPS:
    ]
    return {
        "backend": (metrics.get("plan") or {}).get("backend"),
        "device": metrics.get("device"),
        "steps": steps,
        "step_time_s": round(runtime / steps, 3) if steps and runtime else None,
        "steady_step_time_s": round(statistics.median(step_times), 3) if step_times else None,
        "tokens_per_s": metrics.get("tokens_per_s"),
        "peak_memory_gb": metrics.get("peak_memory_gb"),
        "lora_memory_gb": metrics.get("lora_memory_gb"),
        "training_peak_memory_gb": metrics.get("training_peak_memory_gb"),
        "training_memory_gb": metrics.get("training_memory_gb"),
        "first_losses": [e.get("loss") for e in events[:FIRST_LOSSES]],
        "versions": metrics.get("versions"),
    }


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if (
        not isinstance(numerator, (int, float))
        or not isinstance(denominator, (int, float))
        or denominator <= 0
    ):
        return None
    return round(numerator / denominator, 3)


def backend_comparison(unsloth: dict[str, Any], hf: dict[str, Any]) -> dict[str, Any]:
    """Unsloth against hf: speedup, memory ratios (both definitions), goals, loss agreement."""
    speedup = _ratio(hf["step_time_s"], unsloth["step_time_s"])
    memory = _ratio(unsloth["training_peak_memory_gb"], hf["training_peak_memory_gb"])
    pairs = [
        (a, b)
        for a, b in zip(unsloth["first_losses"], hf["first_losses"])
        if isinstance(a, (int, float)) and isinstance(b, (int, float))
    ]
    return {
        "speedup": speedup,
        "speedup_goal": SPEEDUP_GOAL,
        "speedup_met": None if speedup is None else speedup >= SPEEDUP_GOAL,
        "steady_speedup": _ratio(hf["steady_step_time_s"], unsloth["steady_step_time_s"]),
        "memory_ratio": memory,
        "memory_ratio_lab": _ratio(unsloth["peak_memory_gb"], hf["peak_memory_gb"]),
        "memory_goal": MEMORY_GOAL,
        "memory_met": None if memory is None else memory <= MEMORY_GOAL,
        "first_loss_gap": round(abs(pairs[0][0] - pairs[0][1]) / max(abs(pairs[0][1]), 1e-9), 4)
        if pairs
        else None,
        "largest_loss_gap": (
            round(max(abs(a - b) / max(abs(b), 1e-9) for a, b in pairs), 4) if pairs else None
        ),
    }


def export_summary(run_path: Path) -> dict[str, Any]:
    """The export's q8_0 file: whether its verification against the merged model passed, and why not."""
    export = read_json_or_empty(run_path / "export.json")
    files = export.get("files") if isinstance(export.get("files"), list) else []
    q8 = next((f for f in files if isinstance(f, dict) and f.get("quant") == "q8_0"), None)
    verification = (
        q8.get("verification") if isinstance(q8, dict) and isinstance(q8.get("verification"), dict) else {}
    )
    return {
        "state": export.get("state"),
        "gguf_matches_merged": verification.get("passed"),
        "problems": verification.get("problems", []),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_DIR / "gpu-check", help="where the runs go")
    parser.add_argument("--report", type=Path, default=PROJECT_DIR / "gpu-check" / "report.json")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    gpus = detect_gpus()
    if not gpus:
        print(
            "the GPU check needs a CUDA GPU and nvidia-smi lists none here (Colab: Runtime > Change runtime type > T4 GPU)"
        )
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "gpu": gpus[0].name,
        "steps": args.steps,
        "split": SPLIT,
        "stages": {},
        "runs": {},
    }
    started = time.monotonic()
    for backend in BACKENDS:
        name = f"gpu_check_{backend}_{stamp}"
        stage = core_command(args.runs_dir, *train_arguments(name, backend, args.steps))
        report["stages"][f"train_{backend}"] = stage
        report["runs"][backend] = {
            "name": name,
            **(training_summary(args.runs_dir / name) if stage["ok"] else {}),
        }
    if all(report["stages"][f"train_{b}"]["ok"] for b in BACKENDS):
        report["comparison"] = backend_comparison(report["runs"]["unsloth"], report["runs"]["hf"])
    unsloth_run = args.runs_dir / report["runs"]["unsloth"]["name"]
    if report["stages"]["train_unsloth"]["ok"]:
        stage = core_command(args.runs_dir, *eval_arguments(unsloth_run.name))
        report["stages"]["evaluate"] = stage
        rows = load_eval_results(unsloth_run).get("adapter", [])
        report["evaluation"] = {"passed": pass_count(rows)[0], "answers": len(rows)} if stage["ok"] else None
        stage = core_command(args.runs_dir, *export_arguments(unsloth_run.name))
        report["stages"]["export"] = stage
        report["export"] = export_summary(unsloth_run)
    report["total_s"] = round(time.monotonic() - started, 1)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    failed = [stage for stage, result in report["stages"].items() if not result["ok"]]
    print(
        f"\nGPU check on {report['gpu']}: {report['total_s']} s; "
        + (f"failed: {', '.join(failed)}" if failed else "every stage ran")
    )
    if "comparison" in report:
        c = report["comparison"]
        print(
            f"unsloth vs hf: {c['speedup']}x faster (goal >= {SPEEDUP_GOAL}), memory {c['memory_ratio']}x "
            f"(goal <= {MEMORY_GOAL}; lab definition {c['memory_ratio_lab']}x), "
            f"first losses {c['first_loss_gap']} apart (relative)"
        )
    print(f"report: {args.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
