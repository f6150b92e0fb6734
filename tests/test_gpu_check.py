"""bench/gpu_check.py, the GPU check for the day a GPU is lent: what runs of it without one.

No GPU here, so the check's own run is refused with its reason; its report is built from two
real CPU runs of the tiny model standing in for the unsloth and hf runs (same data and seed,
so their losses must agree, as the two backends' should on a GPU). The export summary is
read from a real export in tests/test_export.py.
"""

import subprocess
import sys

import pytest
from conftest import PROJECT_DIR, run_core

from bench import gpu_check
from core.store.files import read_json_object, read_jsonl


def test_without_a_gpu_the_check_says_so_and_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--runs-dir", str(tmp_path / "runs")],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "needs a CUDA GPU" in done.stdout
    assert not (tmp_path / "runs").exists()


def test_the_report_compares_two_runs_step_time_memory_and_losses(runs_root):
    summaries = []
    for name in ("stand_in_unsloth", "stand_in_hf"):
        done = run_core(
            "train",
            name,
            "--preset",
            "cpu_smoke",
            *("--set", "max_steps=6", "--set", "logging_steps=1", "--set", "warmup_steps=0"),
            runs_root=runs_root,
        )
        assert done.returncode == 0, done.stderr
        summaries.append(gpu_check.training_summary(runs_root / name))
    unsloth, hf = summaries
    metrics = read_json_object(runs_root / "stand_in_hf" / "metrics.json")
    events, _ = read_jsonl(runs_root / "stand_in_hf" / "events.jsonl")
    assert hf["backend"] == "hf" and hf["steps"] == 6
    assert hf["step_time_s"] == pytest.approx(metrics["train_runtime_s"] / 6, abs=1e-3)
    assert hf["first_losses"] == [event["loss"] for event in events[:5]]
    assert hf["peak_memory_gb"] == metrics["peak_memory_gb"]
    assert hf["training_peak_memory_gb"] == metrics["training_peak_memory_gb"]
    assert hf["steady_step_time_s"] > 0
    comparison = gpu_check.backend_comparison(unsloth, hf)
    assert comparison["speedup"] == pytest.approx(hf["step_time_s"] / unsloth["step_time_s"], abs=1e-3)
    assert comparison["memory_ratio"] == pytest.approx(
        unsloth["training_peak_memory_gb"] / hf["training_peak_memory_gb"], abs=1e-3
    )
    assert comparison["first_loss_gap"] == 0 and comparison["largest_loss_gap"] == 0  # same seed, same data


def test_every_command_the_check_runs_is_one_the_command_line_takes():
    from core.cli import build_parser
    from core.train.presets import get_preset

    parser = build_parser()
    for backend in gpu_check.BACKENDS:
        parsed = parser.parse_args(gpu_check.train_arguments("r", backend, 30))
        get_preset(parsed.preset)
        assert f"backend={backend}" in parsed.set and "max_steps=30" in parsed.set
    assert parser.parse_args(gpu_check.eval_arguments("r")).variant == "adapter"
    assert parser.parse_args(gpu_check.export_arguments("r")).quant == ["q8_0"]
