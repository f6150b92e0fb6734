"""The run folder contract: names, atomic creation and writes, tolerant reads."""

import errno
import json
import os
from pathlib import Path

import pytest

from core.store import files, runs
from core.store.files import read_jsonl, write_json_atomic
from core.store.runs import (
    Run,
    RunExistsError,
    RunNameError,
    RunNotFoundError,
    create_run,
    initial_status,
    list_runs,
    load_run,
    run_summary,
    validate_run_name,
)

CONFIG = {"base_model": "tiny", "split": "train[:64]", "lora_r": 8, "lora_alpha": 16, "max_steps": 30}


@pytest.mark.parametrize("name", ["a", "baseline_1B_r16_10k_600steps", "T2.r64-x", "9" * 64])
def test_valid_names_pass(name):
    assert validate_run_name(name) == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "required"),
        ("   ", "required"),
        (None, "required"),
        ("../x", "slash"),
        ("a/b", "slash"),
        ("a\\b", "slash"),
        ("x" * 65, "65 characters"),
        (".hidden", "start with a letter or a digit"),
        ("-x", "start with a letter or a digit"),
        ("a b", "' '"),
        ("runé", "'é'"),
    ],
)
def test_invalid_names_are_refused_with_the_reason(name, reason, tmp_path):
    message = "required" if reason == "required" else "Invalid run name"
    with pytest.raises(RunNameError, match=message) as info:
        validate_run_name(name)
    assert reason in str(info.value)
    with pytest.raises(RunNameError):
        create_run(tmp_path, name, CONFIG)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "x").exists()


def test_create_then_load_round_trips(tmp_path):
    status = initial_status("completed", max_steps=30)
    metrics = {"train_loss": 1.25, "train_runtime_s": 3.5}
    path = create_run(tmp_path, "r1", CONFIG, status=status, metrics=metrics)
    assert path == tmp_path / "r1"
    run = load_run(tmp_path, "r1")
    assert (run.config, run.status, run.metrics, run.problems) == (CONFIG, status, metrics, ())
    assert run.state == "completed" and not run.broken and not run.imported


def test_new_run_is_queued_without_metrics(tmp_path):
    create_run(tmp_path, "r1", CONFIG)
    run = load_run(tmp_path, "r1")
    assert run.state == "queued"
    assert run.metrics == {} and not run.broken
    assert run.status["created_at"].endswith("Z")


def test_existing_run_is_never_overwritten(tmp_path):
    create_run(tmp_path, "r1", CONFIG)
    with pytest.raises(RunExistsError, match="already exists"):
        create_run(tmp_path, "r1", {"base_model": "other"})
    assert load_run(tmp_path, "r1").config == CONFIG


def test_failed_creation_leaves_no_folder(tmp_path, monkeypatch):
    calls = []

    def failing_write(path: Path, data):
        calls.append(path.name)
        if path.name == runs.STATUS_FILE:
            raise OSError("disk full")
        write_json_atomic(path, data)

    monkeypatch.setattr(runs, "write_json_atomic", failing_write)
    with pytest.raises(OSError, match="disk full"):
        create_run(tmp_path, "r1", CONFIG)
    assert calls == [runs.CONFIG_FILE, runs.STATUS_FILE]
    assert list(tmp_path.iterdir()) == []


def test_a_rename_failure_other_than_exists_is_not_called_exists(tmp_path, monkeypatch):
    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_rename_with", full_disk)  # renameat2, where there is one
    monkeypatch.setattr(files.os, "rename", full_disk)
    with pytest.raises(OSError, match="No space left") as info:
        create_run(tmp_path, "r1", CONFIG)
    assert not isinstance(info.value, RunExistsError)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    write_json_atomic(target, {"state": "running", "step": 5})

    def crash(src, dst, **dir_fds):
        raise KeyboardInterrupt("killed before replace")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(target, {"state": "completed", "step": 30})
    assert json.loads(target.read_text()) == {"state": "running", "step": 5}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def _make_run(root: Path, name: str, **documents: str) -> Path:
    """A run folder with raw file contents (to plant corrupt files)."""
    folder = root / name
    folder.mkdir(parents=True)
    defaults = {"config": json.dumps(CONFIG), "status": json.dumps(initial_status("running", 30))}
    for stem, text in {**defaults, **documents}.items():
        if text is not None:
            (folder / f"{stem}.json").write_text(text)
    return folder


@pytest.mark.parametrize(
    "documents, problem",
    [
        ({"config": '{"base_model": "ti'}, "config.json is not valid JSON"),
        ({"config": None}, "config.json is missing"),
        ({"config": "[1, 2]"}, "config.json holds a list"),
        ({"status": None}, "status.json is missing"),
        ({"status": ""}, "status.json is not valid JSON"),
        ({"status": '{"state": "exploded"}'}, "unknown state 'exploded'"),
        ({"status": "{}"}, "status.json has no state"),
        ({"metrics": "{not json"}, "metrics.json is not valid JSON"),
    ],
)
def test_corrupt_or_missing_files_mark_the_run_broken(tmp_path, documents, problem):
    _make_run(tmp_path, "bad", **documents)
    _make_run(tmp_path, "good")
    listed = {run.name: run for run in list_runs(tmp_path)}
    assert listed["good"].state == "running" and not listed["good"].broken
    bad = listed["bad"]
    assert bad.broken and bad.state == "broken"
    assert any(problem in p for p in bad.problems), bad.problems
    row = run_summary(bad)
    assert row["state"] == "broken" and problem in row["note"]


def test_unreadable_bytes_mark_the_run_broken(tmp_path):
    folder = _make_run(tmp_path, "bad")
    (folder / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    run = load_run(tmp_path, "bad")
    assert run.broken and "config.json" in run.problems[0]


def test_listing_skips_staging_and_hidden_folders_and_flags_bad_names(tmp_path):
    create_run(tmp_path, "ok", CONFIG)
    (tmp_path / ".creating-x-1234").mkdir()
    (tmp_path / "stray-file.txt").write_text("not a run")
    _make_run(tmp_path, "has space")
    listed = {run.name: run for run in list_runs(tmp_path)}
    assert set(listed) == {"ok", "has space"}
    assert "not a valid run name" in listed["has space"].problems[0]


def test_missing_root_lists_nothing_and_unknown_run_is_not_found(tmp_path):
    assert list_runs(tmp_path / "nope") == []
    with pytest.raises(RunNotFoundError):
        load_run(tmp_path, "nope")


def test_runs_are_listed_newest_first(tmp_path):
    for name, created in [("old", "2026-01-01T00:00:00Z"), ("new", "2026-06-01T00:00:00Z")]:
        status = initial_status()
        status["created_at"] = created
        create_run(tmp_path, name, CONFIG, status=status)
    assert [run.name for run in list_runs(tmp_path)] == ["new", "old"]


def test_summary_of_a_running_cpu_run():
    status = {**initial_status("running", 30), "step": 12}
    metrics = {"train_loss": 2.5, "peak_memory_gb": 0.55, "memory_measure": "process_rss", "device": "CPU"}
    row = run_summary(Run("r", Path("r"), {**CONFIG, "dataset": "data/sample.jsonl"}, status, metrics))
    assert row["steps"] == "12/30"
    assert row["lora"] == "8/16"
    assert row["dataset"] == "sample.jsonl train[:64]"
    assert row["device"] == "CPU (process RSS)"
    assert row["train_loss"] == 2.5


def test_jsonl_reading_skips_a_torn_last_line(tmp_path):
    log = tmp_path / "events.jsonl"
    for step in (1, 2):
        files.append_jsonl(log, {"step": step, "loss": 3.0 / step})
    with open(log, "a") as handle:
        handle.write('{"step": 3, "lo')
    records, skipped = read_jsonl(log)
    assert [r["step"] for r in records] == [1, 2]
    assert skipped == 1
    # A writer that resumes after the crash does not glue its record to the torn line.
    files.append_jsonl(log, {"step": 3, "loss": 1.0})
    records, skipped = read_jsonl(log)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert skipped == 1
    assert read_jsonl(tmp_path / "missing.jsonl") == ([], 0)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "metrics.json"
    for value in range(3):
        write_json_atomic(target, {"value": value})
    assert os.listdir(tmp_path) == ["metrics.json"]
    assert json.loads(target.read_text()) == {"value": 2}


def test_only_complete_checkpoints_count_and_torn_ones_are_removed(tmp_path):
    run = create_run(tmp_path, "ckpt", {"base_model": "x"})
    assert runs.latest_checkpoint(run) is None and runs.remove_incomplete_checkpoints(run) == []
    folder = run / runs.CHECKPOINTS_DIR

    def checkpoint(step: int, state: str | None = '{"global_step": 1}', weights: bool = True) -> Path:
        path = folder / f"checkpoint-{step}"
        path.mkdir(parents=True)
        if weights:
            (path / "adapter_model.safetensors").write_bytes(b"weights")
        if state is not None:
            (path / "trainer_state.json").write_text(state)
        return path

    checkpoint(4)
    checkpoint(8)
    checkpoint(12, state='{"global_st')  # killed while the trainer state was written
    checkpoint(16, state=None)  # killed before it
    checkpoint(20, weights=False)
    (folder / "checkpoint-latest").mkdir()
    (folder / "README.md").write_text("model card")
    assert runs.latest_checkpoint(run).name == "checkpoint-8"
    assert runs.remove_incomplete_checkpoints(run) == ["checkpoint-12", "checkpoint-16", "checkpoint-20"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "checkpoint-4", "checkpoint-8", "checkpoint-latest"]


def test_update_status_merges_and_stamps(tmp_path):
    run = create_run(tmp_path, "status", {}, status=initial_status("queued", 10))
    before = json.loads((run / "status.json").read_text())
    after = runs.update_status(run, state="running", step=3)
    assert after["state"] == "running" and after["step"] == 3 and after["max_steps"] == 10
    assert after["created_at"] == before["created_at"]
    assert json.loads((run / "status.json").read_text()) == after
