"""Progress figures of the live view, and the memory estimate of the Train page."""

import pytest

from core.train.config import parse_config
from core.train.estimate import estimate_memory
from core.train.presets import get_preset
from core.train.progress import format_duration, training_progress


def events(steps: int, seconds_per_step: float, start_s: float = 0.0) -> list[dict]:
    return [
        {"step": s, "loss": 8.0 - s / 10, "elapsed_s": start_s + s * seconds_per_step, "memory_gb": 0.5}
        for s in range(1, steps + 1)
    ]


def test_eta_comes_from_the_recent_step_rate_while_running():
    progress = training_progress(
        {"step": 40, "max_steps": 100, "training_s": 20.0}, events(40, 0.5), running=True
    )
    assert progress.seconds_per_step == pytest.approx(0.5)
    assert progress.eta_s == pytest.approx(30.0) and progress.elapsed_s == 20.0
    assert progress.fraction == 0.4 and progress.loss == pytest.approx(4.0)


def test_a_resumed_run_measures_its_rate_on_the_latest_steps():
    # 30 s lost to a crash: the resumed steps are faster, and the rate follows them
    history = events(10, 2.0) + events(30, 0.5, start_s=30.0)[10:]
    progress = training_progress({"step": 30, "max_steps": 50}, history, running=True)
    assert progress.seconds_per_step == pytest.approx(0.5) and progress.eta_s == pytest.approx(10.0)


def test_no_eta_when_not_running_or_unknown():
    assert training_progress({"step": 30, "max_steps": 30}, events(30, 0.5), running=False).eta_s is None
    assert training_progress({"step": 1, "max_steps": 30}, events(1, 0.5), running=True).eta_s is None
    bare = training_progress({}, [], running=False)
    assert (bare.step, bare.max_steps, bare.elapsed_s, bare.fraction) == (0, None, None, 0.0)


def test_values_that_are_not_numbers_are_unknown():
    odd = [
        {"loss": "high"},
        {"step": 2, "loss": float("nan"), "memory_gb": "lots"},
        {"step": "3", "elapsed_s": "x"},
    ]
    progress = training_progress({"step": "x", "max_steps": "many", "training_s": "long"}, odd, running=True)
    assert (progress.step, progress.max_steps, progress.loss, progress.memory_gb, progress.eta_s) == (
        2,  # the one step logged as a number
        None,
        None,
        None,
        None,
    )


def test_an_evaluation_logged_last_leaves_the_loss_and_memory_shown():
    events = [
        {"step": 1, "loss": 2.5, "elapsed_s": 1.0, "memory_gb": 0.5},
        {"step": 2, "loss": 2.25, "elapsed_s": 2.0, "memory_gb": 0.75},
        {"step": 2, "eval_loss": 2.4, "elapsed_s": 2.2},
    ]
    progress = training_progress({"state": "running", "max_steps": 4}, events, running=True)
    assert (progress.step, progress.loss, progress.memory_gb) == (2, 2.25, 0.75)


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (None, 42, 185, 3720)] == ["—", "42s", "3m 05s", "1h 02m"]


@pytest.mark.parametrize(
    "preset, measured_gb", [("t1_baseline", 2.564), ("t2_model_centric", 2.955), ("t4_3b", 4.43)]
)
def test_the_estimate_meets_the_labs_measurements(preset, measured_gb):
    estimate = estimate_memory(parse_config(get_preset(preset).config(), check_files=False))
    assert estimate.peak_gb == pytest.approx(measured_gb, abs=0.05)


def test_the_estimate_scales_with_tokens_and_precision_and_knows_its_limits():
    lab = parse_config(get_preset("t1_baseline").config(), check_files=False)
    double = parse_config({**get_preset("t1_baseline").config(), "batch_size": 4}, check_files=False)
    full = parse_config(
        {
            **get_preset("t1_baseline").config(),
            "load_in_4bit": False,
            "base_model": "meta-llama/Llama-3.2-1B-Instruct",
        },
        check_files=False,
    )
    assert estimate_memory(double).training_gb == pytest.approx(2 * estimate_memory(lab).training_gb)
    assert estimate_memory(full).weights_gb > 2 * estimate_memory(lab).weights_gb
    assert estimate_memory(parse_config(get_preset("cpu_smoke").config(), check_files=False)) is None


def test_the_16_bit_estimate_counts_in_gib_like_every_measured_figure():
    full_3b = parse_config(
        {
            **get_preset("t4_3b").config(),
            "load_in_4bit": False,
            "base_model": "meta-llama/Llama-3.2-3B-Instruct",
        },
        check_files=False,
    )
    weights_only = estimate_memory(full_3b).weights_gb - 0.3  # what a 4-bit load holds beyond its weights
    assert weights_only == pytest.approx(5.98, abs=0.01)  # 3.21e9 x 2 bytes in GiB; 6.42 in decimal GB


def test_the_step_is_the_latest_of_the_status_and_the_logged_events():
    """status.json is rewritten at most once a second, events.jsonl at every logged step: the bar
    must not trail the loss and the log shown beside it."""
    assert training_progress({"step": 1, "max_steps": 30}, events(9, 0.5), running=True).step == 9
    assert training_progress({"step": 12, "max_steps": 30}, events(9, 0.5), running=True).step == 12


def test_memory_is_recorded_under_the_labs_definition_and_since_training_started():
    """On CPU the meter reads the process's RSS; a load peak freed before training stays in the
    lab's figures (its start is the peak so far, never reset) and not in the reset ones."""
    from core.train.memory import MemoryMeter

    meter = MemoryMeter("cpu")
    loading = b"x" * (300 * 1024**2)  # written, so its pages are resident
    del loading
    meter.start_training()
    training = b"y" * (100 * 1024**2)
    figures = meter.figures([])
    metrics = figures.to_metrics()
    if not figures.peak_reset:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert figures.start_peak_gb >= figures.start_gb + 0.25  # the load's peak, read before the reset
    assert figures.peak_gb >= figures.start_peak_gb and figures.lora_gb == pytest.approx(
        figures.peak_gb - figures.start_peak_gb
    )
    assert (
        figures.training_gb >= 0.09 > figures.lora_gb
    )  # the lab's figure hides what fits under the load peak
    assert figures.training_peak_gb < figures.peak_gb
    assert set(metrics) == {
        "peak_memory_gb",
        "lora_memory_gb",
        "start_peak_memory_gb",
        "training_peak_memory_gb",
        "training_memory_gb",
        "start_memory_gb",
        "memory_peak_reset",
    }
    del training
