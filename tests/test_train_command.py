"""`python -m core train` and `presets`: bad input is refused with one line and creates nothing.

These call the command's `main` in-process (the same code path as `python -m core`); the
jobs that really train run as subprocesses in test_training.py.
"""

import json
from pathlib import Path

import pytest
from conftest import write_conversations

from core.cli import main
from core.store.runs import create_run, initial_status
from core.train.presets import PRESETS


def command(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--runs-dir", str(root), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "T9"], "no preset named 'T9'; presets: cpu_smoke"),
        (["--preset", "cpu_smoke", "--set", "lora=8"], "lora: is not a config field (did you mean lora_r?)"),
        (["--preset", "cpu_smoke", "--set", "lora_r=0"], "lora_r: must be from 1 to 1024 (got 0)"),
        (["--preset", "cpu_smoke", "--set", "lora_r"], "lora_r: must look like key=value"),
        (["--preset", "t1_baseline"], "load_in_4bit needs a CUDA GPU and there is none here"),
        (
            ["--preset", "cpu_smoke", "--set", "dataset=nowhere/data.jsonl"],
            "dataset: no such file: nowhere/data.jsonl",
        ),
        (["--preset", "cpu_smoke", "--resume"], "--resume continues with the run's own config"),
        (["--set", "lora_r=8"], "--set changes a preset or a config file"),
        ([], "no run named new_run in"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(capsys, runs_root, args, message):
    code, out, err = command(capsys, runs_root, "train", "new_run", *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert run_folders(runs_root) == []


def test_bad_names_config_files_and_datasets_create_nothing(capsys, runs_root, tmp_path):
    code, _, err = command(capsys, runs_root, "train", "bad/name", "--preset", "cpu_smoke")
    assert code == 1 and "Invalid run name 'bad/name': it contains a slash" in err
    (tmp_path / "config.json").write_text("{not json")
    code, _, err = command(capsys, runs_root, "train", "r", "--config", str(tmp_path / "config.json"))
    assert code == 1 and f"cannot read {tmp_path / 'config.json'}" in err
    (tmp_path / "list.json").write_text("[1, 2]")
    code, _, err = command(capsys, runs_root, "train", "r", "--config", str(tmp_path / "list.json"))
    assert code == 1 and "must hold a JSON object of config fields" in err
    useless = write_conversations(tmp_path / "useless.jsonl", [[("human", "Hi")], [("robot", "beep")]])
    code, _, err = command(
        capsys, runs_root, "train", "r", "--preset", "cpu_smoke", "--set", f"dataset={useless}"
    )
    assert (
        code == 1
        and "no usable conversations" in err
        and "no assistant turn: 1" in err
        and "unknown role: 1" in err
    )
    assert run_folders(runs_root) == []


def test_runs_that_cannot_be_trained_now_are_left_as_they_are(capsys, runs_root):
    config = {"base_model": "tiny-llama", "dataset": "data/sample_sharegpt.jsonl", "load_in_4bit": False}
    create_run(runs_root, "done", config, status={**initial_status("completed", 60)})
    create_run(
        runs_root,
        "imported",
        {**config, "imported_from": "experiments_log.csv"},
        status=initial_status("completed"),
    )
    create_run(runs_root, "stopped", config, status=initial_status("stopped", 60))
    create_run(runs_root, "busy", config, status=initial_status("running", 60))
    before = {name: (runs_root / name / "status.json").read_text() for name in run_folders(runs_root)}
    cases = {
        ("done",): "run done is already completed; train a new run instead",
        ("done", "--resume"): "run done is already completed",
        ("imported", "--resume"): "was imported with metrics only",
        ("stopped",): "run stopped is stopped; continue it with --resume",
        ("busy", "--preset", "cpu_smoke"): "a run named busy already exists",
    }
    for args, message in cases.items():
        code, _, err = command(capsys, runs_root, "train", *args)
        assert code == 1 and message in err, (args, err)
    after = {name: (runs_root / name / "status.json").read_text() for name in run_folders(runs_root)}
    assert after == before


def test_dry_run_prints_config_plan_and_command_and_creates_nothing(capsys, runs_root):
    code, out, err = command(
        capsys,
        runs_root,
        "train",
        "try",
        "--preset",
        "cpu_smoke",
        "--set",
        "lora_r=32",
        "--set",
        "packing=false",
        "--dry-run",
    )
    assert code == 0, err
    printed = json.loads(out)
    assert printed["config"]["lora_r"] == 32 and printed["config"]["packing"] is False
    assert printed["plan"]["backend"] == "hf" and printed["plan"]["device"] == "cpu"
    assert printed["command"] == (
        f"python -m core --runs-dir {runs_root} train try --preset cpu_smoke --set lora_r=32 --set packing=false"
    )
    assert run_folders(runs_root) == []


def test_dry_run_of_a_gpu_preset_on_cpu_still_prints_the_command_to_run_elsewhere(capsys, runs_root):
    code, out, err = command(capsys, runs_root, "train", "t2", "--preset", "t2_model_centric", "--dry-run")
    assert code == 1 and err.startswith("error: cannot train here: load_in_4bit needs a CUDA GPU")
    printed = json.loads(out)
    assert printed["config"]["lora_r"] == 64 and printed["plan"]["error"].startswith("cannot train here")
    assert printed["command"].endswith("train t2 --preset t2_model_centric")
    assert run_folders(runs_root) == []


def test_presets_lists_every_preset_and_its_settings(capsys, runs_root):
    code, out, _ = command(capsys, runs_root, "presets")
    assert code == 0
    for name in PRESETS:
        assert name in out
    assert "64/64" in out and "train[:30000]" in out
    code, out, _ = command(capsys, runs_root, "presets", "--json")
    printed = json.loads(out)
    assert printed["t4_3b"]["config"]["base_model"] == "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"
    assert printed["cpu_smoke"]["config"]["load_in_4bit"] is False


def test_a_run_another_process_trains_is_not_trained_twice(capsys, runs_root):
    import fcntl

    from core.jobs.lifecycle import lock_path

    config = {"base_model": "tiny-llama", "dataset": "data/sample_sharegpt.jsonl", "load_in_4bit": False}
    path = create_run(runs_root, "locked", config, status=initial_status("queued", 60))
    with open(lock_path(path, "train"), "a") as held:  # as the training job of another process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = command(capsys, runs_root, "train", "locked")
    assert code == 1 and "the training of run locked is already running in another process" in err, err
    assert json.loads((runs_root / "locked" / "status.json").read_text())["state"] == "queued"
