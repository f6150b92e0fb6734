"""Bring your runs: a real SFTTrainer run of the tiny Llama (the `train` command, report_to=tensorboard,
on a recipe with a validation share) leaves a Trainer output folder and TensorBoard event files; both
import back with the losses it logged, the imported adapter answers as the run's own does, Compare
draws the imported curve beside the native one, an export to TensorBoard imports back whole, and
hostile zips and folders are refused with nothing created."""

import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import app_at, charts, rerun, run_core, shown
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import summary_pb2, types_pb2

from core.evaluate.answers import evaluate_run
from core.evaluate.prompt_sets import resolve_prompt_set
from core.export.pipeline import adapter_record, sha256_file
from core.interop import archive
from core.interop.imports import import_zip
from core.interop.runs import InteropError
from core.store.files import read_jsonl
from core.store.runs import list_runs, load_run
from core.train import tiny

RUN = "native"
STEPS = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path):
    """A runs root with RUN trained by the real command (6 steps, a checkpoint every 3, an evaluation
    every 2, report_to=tensorboard) and a cache where `tiny-llama` resolves; built once per module."""
    from test_recipe_training import saved_recipe

    cache = tmp_path_factory.mktemp("interop-cache")
    root = tmp_path_factory.mktemp("interop") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        tiny.tiny_model_dir().parent.mkdir(parents=True)
        tiny.tiny_model_dir().symlink_to(tiny_model_build, target_is_directory=True)
        saved_recipe(root, "held", rows=60, validation=0.2)
        started = time.monotonic()
        done = run_core(
            "train", RUN, "--preset", "cpu_smoke", "--set", "recipe=held", "--set", f"max_steps={STEPS}",
            "--set", "save_steps=3", "--set", "eval_steps=2", "--set", "warmup_steps=0",
            "--set", "report_to=tensorboard", runs_root=root,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        print(f"trained {RUN} in {time.monotonic() - started:.1f} s")
    return root, cache


@pytest.fixture
def runs(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh runs root for one test, holding a copy of the trained run."""
    source, cache = trained
    monkeypatch.setenv("PEFT_CACHE_DIR", str(cache))
    root = tmp_path / "runs"
    shutil.copytree(source, root, symlinks=True)
    monkeypatch.setenv("PEFT_RUNS_DIR", str(root))
    return root


def events_of(run: Path) -> tuple[list[dict], list[dict]]:
    events, skipped = read_jsonl(run / "events.jsonl")
    assert skipped == 0
    return [e for e in events if "loss" in e], [e for e in events if "eval_loss" in e]


def zipped(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, prefix + str(path.relative_to(folder)))
    return buffer.getvalue()


def visible(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir())


def test_a_trainer_folder_imports_with_the_trainers_losses_and_its_adapter_answers_as_the_runs(runs):
    native = runs / RUN
    state = json.loads((native / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    logged = [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]
    evaluated = [(e["step"], e["eval_loss"]) for e in state["log_history"] if "eval_loss" in e]
    assert len(logged) == STEPS and len(evaluated) == STEPS // 2  # the real trainer logged them

    started = time.monotonic()
    done = run_core("runs", "import-trainer", str(native / "checkpoints"), "--name", "colab", runs_root=runs)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    print(f"import-trainer: {seconds:.2f} s (command included)")
    imported = runs / "colab"
    train, evals = events_of(imported)
    assert [(e["step"], e["loss"]) for e in train] == logged
    assert [(e["step"], e["eval_loss"]) for e in evals] == evaluated
    native_train, native_evals = events_of(native)
    assert [(e["step"], e["loss"], e["learning_rate"], e["grad_norm"]) for e in train] == [
        (e["step"], e["loss"], e["learning_rate"], e["grad_norm"]) for e in native_train
    ]
    assert [e["eval_loss"] for e in evals] == [e["eval_loss"] for e in native_evals]
    assert set(evals[0]) == {"step", "eval_loss", "epoch", "elapsed_s"}

    run = load_run(runs, "colab")
    assert not run.broken and run.state == "completed" and run.status["step"] == STEPS
    assert run.config["origin"]["importer"] == "trainer"
    assert run.config["origin"]["state"] == f"checkpoint-{STEPS}/trainer_state.json"
    assert (run.config["lora_r"], run.config["max_steps"], run.config["batch_size"]) == (16, STEPS, 2)
    assert run.metrics["train_loss"] == pytest.approx(load_run(runs, RUN).metrics["train_loss"])
    assert not (imported / "checkpoints").exists()  # no pickle (optimizer.pt, training_args.bin) comes along
    assert sorted(p.name for p in (imported / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
    ]

    record = adapter_record(imported)  # what an export merges and records
    weights = native / "checkpoints" / f"checkpoint-{STEPS}" / "adapter_model.safetensors"
    assert (record["step"], record["sha256"]) == (STEPS, sha256_file(weights))

    prompts = resolve_prompt_set(runs, None)
    answers = evaluate_run(imported, "adapter", prompts, max_new_tokens=6)
    own = evaluate_run(native, "adapter", prompts, max_new_tokens=6)
    assert [row["answer"] for row in answers] == [row["answer"] for row in own]
    assert len(answers) == len(prompts.prompts)


def test_a_colab_outputs_folder_gives_its_final_model_and_its_newest_readable_state(runs, tmp_path):
    outputs = tmp_path / "outputs"
    shutil.copytree(runs / RUN / "checkpoints", outputs)
    for path in (runs / RUN / "adapter").iterdir():  # trainer.save_model's final model at the top
        shutil.copy(path, outputs / path.name)
    report = import_zip(runs, zipped(outputs, "content/outputs/"), upload_name="outputs.zip", name=None)
    run = load_run(runs, "outputs")
    assert report.created == ["outputs"] and report.problems == []
    assert (run.config["origin"]["state"], run.config["origin"]["adapter"]) == (
        f"checkpoint-{STEPS}/trainer_state.json",
        ".",
    )
    assert (run.path / "adapter" / "adapter_model.safetensors").read_bytes() == (
        runs / RUN / "adapter" / "adapter_model.safetensors"
    ).read_bytes()

    (outputs / f"checkpoint-{STEPS}" / "trainer_state.json").write_text('{"log_history": [')  # torn
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (outputs / name).unlink()
    report = import_zip(runs, zipped(outputs), upload_name="torn.zip", name="torn")
    assert [p for p in report.problems if "not valid JSON" in p] == [
        f"checkpoint-{STEPS}/trainer_state.json: not read (trainer_state.json is not valid JSON (line 1: "
        "Expecting value))"
    ]
    torn = load_run(runs, "torn")
    assert torn.config["origin"]["state"] == "checkpoint-3/trainer_state.json"
    assert [e["step"] for e in events_of(torn.path)[0]] == [1, 2, 3] and torn.status["step"] == 3


def test_compare_draws_the_imported_curve_beside_the_native_one(runs):
    done = run_core(
        "runs", "import-trainer", str(runs / RUN / "checkpoints"), "--name", "colab", runs_root=runs
    )
    assert done.returncode == 0, done.stderr
    app = rerun(app_at("pages/3_Compare.py", {"runs": f"{RUN},colab"}))
    curves = {trace["name"]: trace for trace in charts(app)["curves"]["data"]}
    assert {RUN, "colab"} <= set(curves)
    assert curves["colab"]["x"] == curves[RUN]["x"] == list(range(1, STEPS + 1))
    assert curves["colab"]["y"] == curves[RUN]["y"]


def test_tensorboard_files_of_a_real_run_import_back_with_identical_losses(runs):
    logs = runs / RUN / "tensorboard"
    assert any("tfevents" in p.name for p in logs.iterdir())
    done = run_core("runs", "import-tensorboard", str(logs), "--name", "tb", runs_root=runs)
    assert done.returncode == 0, done.stderr
    train, evals = events_of(runs / "tb")
    native_train, native_evals = events_of(runs / RUN)
    assert [(e["step"], e["loss"]) for e in train] == [(e["step"], e["loss"]) for e in native_train]
    assert [(e["step"], e["eval_loss"]) for e in evals] == [(e["step"], e["eval_loss"]) for e in native_evals]
    assert [e["learning_rate"] for e in train] == pytest.approx([e["learning_rate"] for e in native_train])
    assert train[-1]["elapsed_s"] > 0
    run = load_run(runs, "tb")
    assert run.config["origin"]["importer"] == "tensorboard" and not (runs / "tb" / "adapter").exists()


def test_an_export_to_tensorboard_imports_back_with_hparams_and_float32_losses(runs, tmp_path):
    out = tmp_path / "tb-export"
    started = time.monotonic()
    done = run_core("runs", "export-tensorboard", str(out), RUN, runs_root=runs)
    print(f"export-tensorboard: {time.monotonic() - started:.2f} s (command included)")
    assert done.returncode == 0, done.stderr
    assert (out / RUN).is_dir() and any("tfevents" in p.name for p in out.iterdir())  # the experiment summary
    done = run_core("runs", "import-tensorboard", str(out), "--name", "back", runs_root=runs)
    assert done.returncode == 0, done.stderr
    back = load_run(runs, f"back-{RUN}")
    train, evals = events_of(back.path)
    native_train, native_evals = events_of(runs / RUN)
    keys = ("loss", "learning_rate", "grad_norm", "epoch")  # TensorBoard keeps scalars as float32
    assert [[e["step"]] + [e[k] for k in keys] for e in train] == [
        [e["step"]] + [float(np.float32(e[k])) for k in keys] for e in native_train
    ]
    assert [e["loss"] for e in train] == [e["loss"] for e in native_train]  # the trainer's own are float32
    assert [(e["step"], e["eval_loss"]) for e in evals] == [
        (e["step"], float(np.float32(e["eval_loss"]))) for e in native_evals
    ]
    # written as tf.summary.scalar writes them: TensorBoard's fast loader shows no other kind
    (event_file,) = [p for p in (out / RUN).iterdir() if "tfevents" in p.name]
    values = [v for event in EventFileLoader(str(event_file)).Load() for v in event.summary.value]
    losses = [v for v in values if v.tag == "train/loss"]
    assert len(losses) == STEPS and all(
        v.tensor.dtype == types_pb2.DT_FLOAT and v.metadata.data_class == summary_pb2.DATA_CLASS_SCALAR
        for v in losses
    )
    original = load_run(runs, RUN).config
    for key in ("lora_r", "lora_alpha", "learning_rate", "max_steps", "base_model", "packing", "report_to"):
        assert back.config[key] == original[key], key
    assert back.config["target_modules"] == original["target_modules"]
    # an export replaces its own folder, and refuses one it did not write
    assert run_core("runs", "export-tensorboard", str(out), RUN, runs_root=runs).returncode == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = run_core("runs", "export-tensorboard", str(tmp_path / "mine"), runs_root=runs)
    assert refused.returncode == 1 and "did not write" in refused.stderr
    assert visible(tmp_path / "mine") == ["notes.txt"]


def test_trackio_reads_back_what_a_run_reported_to_its_local_store(trained, tmp_path, monkeypatch):
    _, cache = trained
    monkeypatch.setenv("PEFT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    root = tmp_path / "runs"
    done = run_core(
        "train", "tracked", "--preset", "cpu_smoke", "--set", "max_steps=3", "--set", "warmup_steps=0",
        "--set", "report_to=trackio", runs_root=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    train, _ = events_of(root / "tracked")
    assert [p.name for p in (tmp_path / "trackio").glob("*.db")] == ["peft-dashboard.db"]
    script = (
        "import json\nfrom trackio.sqlite_storage import SQLiteStorage\n"
        "print(json.dumps(SQLiteStorage.get_logs('peft-dashboard', 'tracked')))"
    )
    read = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    logs = json.loads(read.stdout)
    assert [(row["train/global_step"], row["train/loss"]) for row in logs if "train/loss" in row] == [
        (e["step"], e["loss"]) for e in train
    ]


def test_a_tracker_that_is_not_installed_is_refused_before_a_run_exists(monkeypatch):
    from test_plan import CPU

    from core.machine.devices import PlanError
    from core.train import plan
    from core.train.config import parse_config
    from core.train.presets import get_preset

    config = parse_config({**get_preset("cpu_smoke").config(), "report_to": "wandb"})
    monkeypatch.setattr(plan, "package_version", lambda name: None if name == "wandb" else "1.0")
    with pytest.raises(PlanError, match="report_to=wandb needs the wandb package"):
        plan.plan_training(config, CPU)
    arguments = plan.sft_arguments(
        parse_config({**config.to_dict(), "report_to": "tensorboard"}),
        plan.plan_training(parse_config({**config.to_dict(), "report_to": "tensorboard"}), CPU),
        Path("/runs/mine/checkpoints"),
        progress_bar=False,
    )
    assert (arguments["report_to"], arguments["run_name"]) == ("tensorboard", "mine")
    assert arguments["logging_dir"] == "/runs/mine/tensorboard"


def test_a_job_gets_the_trackers_settings_and_none_of_their_keys(monkeypatch):
    from core.jobs.lifecycle import job_environment

    settings = {"TRACKIO_DIR": "/data/trackio", "WANDB_PROJECT": "lab", "WANDB_MODE": "offline"}
    secrets = {
        "WANDB_API_KEY": "key",
        "MLFLOW_TRACKING_URI": "https://user:pass@mlflow",
        "MLFLOW_TRACKING_TOKEN": "t",
    }
    monkeypatch.setattr(os, "environ", {"PATH": "/usr/bin", "HOME": "/home/u", **settings, **secrets})
    environment = job_environment(hub=False)
    assert {key: environment.get(key) for key in settings} == settings
    assert not set(secrets) & set(environment)


# --- hostile input -------------------------------------------------------------------------------


def raw_zip(*members: tuple[str, bytes, int]) -> bytes:
    """A zip of (name, data, unix mode) members, written as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            handle.writestr(info, data)
    return buffer.getvalue()


def refused(runs: Path, data: bytes, reason: str) -> None:
    before = visible(runs) if runs.exists() else []
    with pytest.raises(InteropError, match=reason):
        import_zip(runs, data, upload_name="up.zip", name="up")
    assert visible(runs) == before  # no run, no staging folder left


REGULAR = stat.S_IFREG | 0o644


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("../escape.txt", b"x", REGULAR)], "outside the archive"),
        ([("outputs/../../escape.txt", b"x", REGULAR)], "outside the archive"),
        ([("/tmp/escape.txt", b"x", REGULAR)], "outside the archive"),
        ([("C:/escape.txt", b"x", REGULAR)], "outside the archive"),
        ([("outputs/trainer_state.json", b"/etc/passwd", stat.S_IFLNK | 0o777)], "symbolic link"),
        ([("fifo", b"", stat.S_IFIFO | 0o644)], "not a file or folder"),
        ([("a.txt", b"1", REGULAR), ("a.txt", b"2", REGULAR)], "twice"),
        ([("notes.txt", b"hello", REGULAR)], "neither a Trainer output folder"),
        (
            [("logs/events.out.tfevents.1.host", b"\xff" * 16 + b"not a record", REGULAR)],
            "no event could be read",
        ),
        ([("outputs/trainer_state.json", b'{"log_history": [{"step": 1}]}', REGULAR)], "no training loss"),
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")  # the zip is written with one on purpose
def test_hostile_zips_are_refused_and_leave_nothing(runs_root, tmp_path, members, reason):
    runs_root.mkdir()
    refused(runs_root, raw_zip(*members), reason)
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()


def test_zip_bombs_and_non_zips_are_refused_before_unpacking(runs_root, monkeypatch):
    runs_root.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("outputs/trainer_state.json", b"0" * (archive.MAX_UNPACKED_BYTES + 1))
    assert len(buffer.getvalue()) < 1 << 20  # a small upload that unpacks past the cap
    refused(runs_root, buffer.getvalue(), "unpacks to")
    refused(runs_root, raw_zip(*[(f"f{i}", b"", REGULAR) for i in range(archive.MAX_MEMBERS + 1)]), "members")
    refused(runs_root, b"PK\x03\x04 not really a zip", "not a zip archive")
    # a member that declares less than it holds is cut at its declared size and fails its check
    data = bytearray(raw_zip(("outputs/trainer_state.json", b'{"log_history": []}' * 50, REGULAR)))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size in the listing
    refused(runs_root, bytes(data), "cannot be unpacked .Bad CRC-32")


def test_pickles_are_never_loaded_and_a_pickled_adapter_is_left_out(runs, tmp_path):
    planted = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {planted}",))

    folder = tmp_path / "outputs"
    checkpoint = folder / f"checkpoint-{STEPS}"
    shutil.copytree(runs / RUN / "checkpoints" / f"checkpoint-{STEPS}", checkpoint)
    (checkpoint / "adapter_model.safetensors").unlink()
    for name in ("adapter_model.bin", "training_args.bin", "optimizer.pt"):
        (checkpoint / name).write_bytes(pickle.dumps(Payload()))
    report = import_zip(runs, zipped(folder, "outputs/"), upload_name="outputs.zip", name="pickled")
    assert report.created == ["pickled"] and not planted.exists()
    assert any("adapter_model.bin is a pickle" in problem for problem in report.problems)
    assert not (runs / "pickled" / "adapter").exists()
    assert len(events_of(runs / "pickled")[0]) == STEPS


def test_links_in_a_folder_are_not_followed_and_a_taken_name_changes_nothing(runs, tmp_path):
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "trainer_state.json").symlink_to(
        runs / RUN / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json"
    )
    done = run_core("runs", "import-trainer", str(folder), "--name", "linked", runs_root=runs)
    assert done.returncode == 1 and "symbolic link" in done.stderr
    logs = tmp_path / "logs"
    logs.mkdir()
    for event_file in (runs / RUN / "tensorboard").iterdir():
        (logs / event_file.name).symlink_to(event_file)
    done = run_core("runs", "import-tensorboard", str(logs), "--name", "linked", runs_root=runs)
    assert done.returncode == 1 and "no TensorBoard event files" in done.stderr
    before = (runs / RUN / "config.json").read_text()
    done = run_core("runs", "import-trainer", str(runs / RUN / "checkpoints"), "--name", RUN, runs_root=runs)
    assert done.returncode == 1 and "already exists" in done.stderr
    assert (runs / RUN / "config.json").read_text() == before
    done = run_core(
        "runs", "import-trainer", str(runs / RUN / "checkpoints"), "--name", "../up", runs_root=runs
    )
    assert done.returncode == 1 and "Invalid run name" in done.stderr
    assert [run.name for run in list_runs(runs) if not run.broken] == [RUN]


def test_the_home_upload_imports_a_zipped_trainer_folder_and_refuses_a_hostile_one(runs):
    data = zipped(runs / RUN / "checkpoints", "outputs/")
    assert len(data) < 5 << 20  # within the upload limit
    app = rerun(app_at())
    app.text_input(key="interop_name").input("uploaded")
    app.file_uploader(key="interop_upload").set_value(("outputs.zip", data, "application/zip")).run()
    app.button(key="interop_import").click()
    rerun(app)
    assert "outputs.zip: imported 1 run(s) (uploaded)" in shown(app.success[0].value)
    assert load_run(runs, "uploaded").config["origin"]["source"] == "outputs.zip"
    assert len(events_of(runs / "uploaded")[0]) == STEPS and (runs / "uploaded" / "adapter").is_dir()

    bad = raw_zip(("../../escape.txt", b"x", REGULAR))
    app.file_uploader(key="interop_upload").set_value(("bad*name.zip", bad, "application/zip")).run()
    app.button(key="interop_import").click()
    rerun(app)
    error = shown(app.error[0].value)
    assert error.startswith("bad*name.zip was not imported") and "outside the archive" in error
    assert app.error[0].value.startswith("bad\\*name")  # file-derived text is escaped before markdown


def test_the_home_download_holds_every_run_as_tensorboard_logs(runs):
    app = rerun(app_at())
    app.button(key="interop_export").click()
    rerun(app)
    download = app.get("download_button")
    assert any("as TensorBoard logs" in button.proto.label for button in download)


# --- the reviewer's attacks (issue 22) -----------------------------------------------------------


def trainer_folder(runs: Path, tmp_path: Path, name: str = "outputs") -> Path:
    """A Trainer output folder holding a copy of the native run's last checkpoint."""
    folder = tmp_path / name
    shutil.copytree(runs / RUN / "checkpoints" / f"checkpoint-{STEPS}", folder / f"checkpoint-{STEPS}")
    return folder


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_global_step_that_names_a_path_reaches_no_folder_outside_the_import(runs, tmp_path):
    from core.interop.imports import import_folder

    folder = tmp_path / "outputs"
    (folder / "checkpoint-").mkdir(parents=True)  # with the step below: outputs/checkpoint-/../../runs/...
    state = {"global_step": f"/../../{runs.name}/{RUN}/adapter", "log_history": [{"step": 1, "loss": 2.0}]}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    report = import_folder(runs, folder, name="hostile", source="outputs", kind="trainer")
    assert report.created == ["hostile"]
    run = load_run(runs, "hostile")
    assert run.config["origin"]["adapter"] is None and not (run.path / "adapter").exists()
    assert "lora_r" not in run.config and "base_model" not in run.config  # nothing of the other run's adapter


def test_an_adapter_whose_config_or_shapes_do_not_hold_is_left_out_and_a_kept_one_gets_a_clean_config(
    runs, tmp_path
):
    folder = trainer_folder(runs, tmp_path)
    config = folder / f"checkpoint-{STEPS}" / "adapter_config.json"
    original = config.read_text()
    attacks = {
        "huge": ({"r": 3_000_000}, "lora_r must be"),
        "rank": ({"r": 8}, "does not match r=8"),  # the weights are of r=16
        "task": ({"task_type": "SEQ_CLS"}, "task_type is 'SEQ_CLS'"),
        "pattern": ({"rank_pattern": {"q_proj": 1_000_000}}, "rank_pattern is set"),
    }
    for name, (changes, reason) in attacks.items():
        config.write_text(original)
        edit_json(config, **changes)
        report = import_zip(runs, zipped(folder), upload_name=f"{name}.zip", name=name)
        assert report.created == [name] and not (runs / name / "adapter").exists(), name
        assert any(reason in p for p in report.problems), (name, report.problems)
        assert load_run(runs, name).config.get("lora_r") in (None, 8, 16)

    config.write_text(original)
    edit_json(config, surprise={"anything": 1}, revision="evil", base_model_name_or_path="")
    report = import_zip(runs, zipped(folder), upload_name="clean.zip", name="clean")
    written = json.loads((runs / "clean" / "adapter" / "adapter_config.json").read_text())
    assert set(written) == {
        "peft_type", "task_type", "base_model_name_or_path", "r", "lora_alpha", "lora_dropout",
        "target_modules", "use_rslora", "bias", "inference_mode",
    }  # fmt: skip
    assert written["r"] == 16 and written["base_model_name_or_path"] is None
    # the base model's problem is reported against the file that holds it
    assert f"checkpoint-{STEPS}/adapter_config.json: base_model left out (is required)" in report.problems


def test_chat_templates_that_do_not_render_within_limits_and_a_partial_tokenizer_are_left_out(runs, tmp_path):
    from core.interop.templates import template_problem

    folder = trainer_folder(runs, tmp_path)
    checkpoint = folder / f"checkpoint-{STEPS}"
    (checkpoint / "chat_template.jinja").write_text("{{ 'x' * 400000000 }}")
    started = time.monotonic()
    report = import_zip(runs, zipped(folder), upload_name="memory.zip", name="memory")
    print(f"a template that runs out of memory: {time.monotonic() - started:.2f} s")
    adapter = runs / "memory" / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert any("chat_template.jinja: the chat template does not render" in p for p in report.problems)

    (checkpoint / "chat_template.jinja").unlink()
    edit_json(checkpoint / "tokenizer_config.json", chat_template="x" * (64 << 10) + "!")
    report = import_zip(runs, zipped(folder), upload_name="long.zip", name="long")
    assert any("65,537 characters long" in p for p in report.problems)
    assert not (runs / "long" / "adapter" / "tokenizer_config.json").exists()

    loops = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    assert "within 3 s" in template_problem(loops)
    assert time.monotonic() - started < 6
    assert template_problem("{% for m in messages %}{{ m['content'] }}{% endfor %}") is None

    edit_json(checkpoint / "tokenizer_config.json", chat_template="{{ messages[0]['content'] }}")
    (checkpoint / "tokenizer.json").unlink()  # tokenizer_config.json alone cannot load a tokenizer
    report = import_zip(runs, zipped(folder), upload_name="partial.zip", name="partial")
    assert sorted(p.name for p in (runs / "partial" / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert any("tokenizer files left out (no tokenizer.json)" in p for p in report.problems)


def test_steps_follow_one_rule_and_numbers_written_are_finite(runs, tmp_path):
    from tensorboard.compat.proto import summary_pb2

    folder = tmp_path / "outputs"
    folder.mkdir()
    history = [{"step": s, "loss": 1e308} for s in (-1, 1, 2, 7, 10**23)] + [{"step": 3, "loss": 1e308}]
    (folder / "trainer_state.json").write_text(json.dumps({"max_steps": 5, "log_history": history}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:  # writestr: mode 0o600, no file-type bits
        handle.writestr("outputs/trainer_state.json", (folder / "trainer_state.json").read_text())
    report = import_zip(runs, buffer.getvalue(), upload_name="steps.zip", name="steps")
    assert report.created == ["steps"]
    assert [e["step"] for e in events_of(runs / "steps")[0]] == [1, 2, 3]
    assert "Infinity" not in (runs / "steps" / "metrics.json").read_text()

    logs = tmp_path / "logs"
    logs.mkdir()
    from core.interop.tensorboard import _scalar_value, _write_events

    def loss(value: float) -> summary_pb2.Summary:
        return summary_pb2.Summary(value=[_scalar_value("train/loss", value)])

    _write_events(logs, [(-1, 100.0, loss(3.0)), (1, float("nan"), loss(2.0)), (2, 100.0, loss(1.0))])
    done = run_core("runs", "import-tensorboard", str(logs), "--name", "tbsteps", runs_root=runs)
    assert done.returncode == 0, done.stderr
    train, _ = events_of(runs / "tbsteps")
    assert [e["step"] for e in train] == [2]  # a negative step, a NaN wall time: left out
    assert "NaN" not in (runs / "tbsteps" / "events.jsonl").read_text()


def test_an_import_past_what_a_run_may_hold_is_thinned_evenly_and_stays_readable(runs, tmp_path, monkeypatch):
    from core.interop import runs as interop_runs

    monkeypatch.setattr(interop_runs, "MAX_RECORDS_BYTES", 20_000)
    folder = tmp_path / "outputs"
    folder.mkdir()
    history = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-4, "epoch": s / 1000} for s in range(1, 1001)]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    report = import_zip(runs, zipped(folder), upload_name="long.zip", name="long")
    steps = [e["step"] for e in events_of(runs / "long")[0]]
    assert steps[0] == 1 and steps[-1] == 1000 and len(steps) < 200
    assert (runs / "long" / "events.jsonl").stat().st_size <= 20_000
    assert any("1,000 logged steps" in p and "evenly spread" in p for p in report.problems)
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert max(gaps) - min(gaps) <= 1

    from core.interop import tensorboard

    monkeypatch.setattr(tensorboard, "MAX_EVENTS_READ", 10)  # stops reading there: time stays bounded
    logs = tmp_path / "logs"
    shutil.copytree(runs / RUN / "tensorboard", logs / "dense")
    with pytest.raises(InteropError, match="dense: not imported .more than 10 events"):
        import_zip(runs, zipped(logs), upload_name="logs.zip", name="dense")


def test_tensorboard_folders_whose_names_clean_up_alike_become_distinct_runs(runs, tmp_path):
    logs = tmp_path / "logs"
    for folder in ("a b", "a-b", "a+b"):
        shutil.copytree(runs / RUN / "tensorboard", logs / folder)
    report = import_zip(runs, zipped(logs), upload_name="logs.zip", name="x")
    assert sorted(report.created) == ["x-a-b", "x-a-b-2", "x-a-b-3"] and report.problems == []


def test_one_bad_run_does_not_stop_an_export_and_exports_are_capped(runs, tmp_path, monkeypatch):
    from core.interop import tensorboard

    bad = runs / "bad"
    shutil.copytree(runs / RUN, bad)
    with (bad / "events.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": 2**63, "loss": 1.0}) + "\n")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config)[:-1] + ', "unknown": ' + "9" * 400 + "}")
    written, left_out = tensorboard.export_tensorboard(list_runs(runs), tmp_path / "out")
    assert written == ["bad", RUN] and left_out == []

    monkeypatch.setattr(tensorboard, "_run_summaries", lambda run, events: 1 / 0)
    written, left_out = tensorboard.export_tensorboard(list_runs(runs)[:1], tmp_path / "broken")
    assert written == [] and left_out == ["bad (cannot be written: ZeroDivisionError: division by zero)"]
    monkeypatch.undo()

    monkeypatch.setattr(tensorboard, "MAX_EXPORT_RUNS", 1)
    monkeypatch.setattr(tensorboard, "MAX_EXPORT_STEPS", 2)
    written, left_out = tensorboard.export_tensorboard(list_runs(runs), tmp_path / "capped")
    assert written == ["bad"] and left_out == [f"{RUN} (an export writes at most 1 runs)"]
    (event_file,) = [p for p in (tmp_path / "capped" / "bad").iterdir() if "tfevents" in p.name]
    steps = [
        e.step
        for e in EventFileLoader(str(event_file)).Load()
        if any(v.tag == "train/loss" for v in e.summary.value)
    ]
    assert steps == [1, STEPS]


def test_the_tensorboard_download_is_written_once_per_state_of_the_runs(runs, monkeypatch):
    from core.interop import tensorboard

    calls = []
    real = tensorboard.tensorboard_zip
    monkeypatch.setattr(tensorboard, "tensorboard_zip", lambda picked: calls.append(1) or real(picked))
    app = rerun(app_at())
    for _ in range(2):
        app.button(key="interop_export").click()
        rerun(app)
    assert len(calls) == 1
    assert any(f"at most {tensorboard.MAX_EXPORT_RUNS} runs" in shown(c.value) for c in app.caption)


def test_an_upload_with_a_checkpoint_of_odd_digits_and_control_characters_in_its_name_imports(runs, tmp_path):
    folder = trainer_folder(runs, tmp_path)
    (folder / "checkpoint-²").mkdir()  # str.isdigit() holds, int() raises
    report = import_zip(runs, zipped(folder), upload_name="nul\x00name.zip", name=None)
    assert (
        report.created == ["nulname"]
        and load_run(runs, "nulname").config["origin"]["source"] == "nulname.zip"
    )
    app = rerun(app_at())  # Streamlit refuses a NUL in an upload's name itself; a tab reaches the page
    app.file_uploader(key="interop_upload").set_value(
        ("odd\tname.zip", zipped(folder), "application/zip")
    ).run()
    app.button(key="interop_import").click()
    rerun(app)
    assert not app.exception
    assert "oddname.zip: imported 1 run(s) (oddname)" in shown(app.success[0].value)
