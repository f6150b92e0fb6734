"""Run folders from elsewhere are hostile: planted links, FIFOs, devices, huge files and odd
text are refused or reported, never followed, never waited on, never read whole.

Every test plants the file as an attacker would and runs the real readers and writers.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.store.files import (
    MAX_DOCUMENT_BYTES,
    FileProblem,
    append_jsonl,
    open_regular,
    read_json_object,
    read_jsonl,
    staging_dir,
    sweep_debris,
    tail_lines,
    write_json_atomic,
)
from core.store.runs import create_run, initial_status, list_runs, load_run, read_run_folder
from core.train.config import default_config


def make_run(root: Path, name: str = "run1") -> Path:
    return create_run(root, name, default_config(), status=initial_status("completed", 30))


def test_a_linked_document_is_not_followed(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "hf_secret"}')
    run = make_run(tmp_path / "runs")
    (run / "metrics.json").symlink_to(secret)
    with pytest.raises(FileProblem, match="symbolic link"):
        read_json_object(run / "metrics.json")
    loaded = read_run_folder(run)
    assert loaded.metrics == {}
    assert any("metrics.json" in problem and "symbolic link" in problem for problem in loaded.problems)


def test_config_json_linked_to_dev_zero_is_refused_at_once(tmp_path):
    run = make_run(tmp_path / "runs")
    (run / "config.json").unlink()
    (run / "config.json").symlink_to("/dev/zero")
    started = time.monotonic()
    loaded = read_run_folder(run)
    assert time.monotonic() - started < 1
    assert loaded.broken and "config.json" in loaded.problems[0]


def test_a_huge_document_is_not_read_whole(tmp_path):
    run = make_run(tmp_path / "runs")
    with open(run / "metrics.json", "wb") as handle:  # a sparse 2 GB file: cheap to plant
        handle.truncate(2 << 30)
    with pytest.raises(FileProblem, match=f"larger than {MAX_DOCUMENT_BYTES:,} bytes"):
        read_json_object(run / "metrics.json")
    assert read_run_folder(run).broken


def test_a_fifo_named_metrics_json_does_not_hang_the_listing(tmp_path):
    """A real `python -m core runs list` over a runs root with a FIFO planted as metrics.json
    and as train.log ends, and reports the run broken."""
    root = tmp_path / "runs"
    run = make_run(root)
    os.mkfifo(run / "metrics.json")
    os.mkfifo(run / "train.log")
    listing = subprocess.run(
        [sys.executable, "-m", "core", "--runs-dir", str(root), "runs", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "run1" in listing.stdout
    assert "broken" in listing.stdout
    assert tail_lines(run / "train.log") == []
    with pytest.raises(OSError):
        open_regular(run / "train.log")


def test_a_device_or_folder_is_not_a_document(tmp_path):
    (tmp_path / "status.json").mkdir()
    with pytest.raises(FileProblem, match="cannot be read"):
        read_json_object(tmp_path / "status.json")
    with pytest.raises(OSError):
        open_regular(Path("/dev/null"))


def test_a_linked_run_folder_is_listed_broken_and_never_entered(tmp_path):
    root = tmp_path / "runs"
    elsewhere = make_run(tmp_path / "elsewhere", "real")
    root.mkdir()
    (root / "planted").symlink_to(elsewhere)
    (listed,) = list_runs(root)
    assert listed.name == "planted" and listed.broken
    assert listed.config == {} and "symbolic link" in listed.problems[0]
    assert load_run(root, "planted").broken


def test_a_linked_subfolder_is_not_written_through(tmp_path):
    """A run's jobs/ folder planted as a link: writes and appends into it are refused, and the
    folder it points at stays untouched."""
    run = make_run(tmp_path / "runs")
    target = tmp_path / "target"
    target.mkdir()
    (run / "jobs").symlink_to(target)
    with pytest.raises(OSError):
        write_json_atomic(run / "jobs" / "eval.json", {"state": "queued"})
    with pytest.raises(OSError):
        append_jsonl(run / "jobs" / "events.jsonl", {"step": 1})
    assert list(target.iterdir()) == []


def test_a_write_replaces_a_planted_link_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = make_run(tmp_path / "runs")
    (run / "status.json").unlink()
    (run / "status.json").symlink_to(victim)
    write_json_atomic(run / "status.json", {"state": "completed"})
    assert victim.read_text() == "keep me"
    assert not (run / "status.json").is_symlink()
    assert json.loads((run / "status.json").read_text()) == {"state": "completed"}


def test_an_append_through_a_planted_link_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = make_run(tmp_path / "runs")
    (run / "events.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        append_jsonl(run / "events.jsonl", {"step": 1})
    with pytest.raises(FileProblem, match="symbolic link"):
        read_jsonl(run / "events.jsonl")
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("base_model", "tiny\nrm -rf /", "base_model must be one line without control characters"),
        ("dataset", "data\x1b[31m.jsonl", "dataset must be one line without control characters"),
        ("note", "two\nlines are fine\x07", "note must not hold control characters other than line breaks"),
        ("imported_from", {"file": "log.csv\r\nX", "line": 2}, "imported_from.file must be one line"),
        ("base_model", "x" * 5000, "base_model is 5000 characters long"),
    ],
)
def test_odd_text_in_a_stored_config_marks_the_run_broken(tmp_path, field, value, problem):
    run = make_run(tmp_path / "runs")
    config = json.loads((run / "config.json").read_text())
    write_json_atomic(run / "config.json", {**config, field: value})
    loaded = read_run_folder(run)
    assert loaded.broken
    assert any(problem in text for text in loaded.problems), loaded.problems


def test_text_valid_on_creation_is_valid_on_load(tmp_path):
    run = make_run(tmp_path / "runs")
    config = json.loads((run / "config.json").read_text())
    write_json_atomic(run / "config.json", {**config, "note": "line one\n\tline two"})
    assert not read_run_folder(run).broken


def test_sweep_removes_what_killed_writers_left_and_spares_live_ones(tmp_path):
    """Debris of a killed import (a staged run), a killed delete and a killed atomic write is
    removed; a staging folder still held by its writer, a real run and a link's target stay."""
    root = tmp_path / "runs"
    make_run(root, "kept")
    (root / ".run2.0123abcd.partial").mkdir()
    (root / ".run2.0123abcd.partial" / "config.json").write_text("{}")
    (root / ".old-run.89abcdef.deleting").mkdir()
    (root / ".seeded.fedcba98.tmp").write_text("half")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".x.00000000.partial").symlink_to(outside)
    (root / ".notes").mkdir()  # hidden, but not debris
    swept: list[str] = []
    with staging_dir(root / "run3") as live:
        (live / "config.json").write_text("{}")
        thread = threading.Thread(target=lambda: swept.extend(sweep_debris(root)))
        thread.start()
        thread.join()
        assert live.is_dir()
    assert sorted(swept) == [
        ".old-run.89abcdef.deleting",
        ".run2.0123abcd.partial",
        ".seeded.fedcba98.tmp",
        ".x.00000000.partial",
    ]
    assert sorted(p.name for p in root.iterdir()) == [".notes", "kept"]
    assert outside.is_dir()


def test_a_planted_lock_link_creates_nothing_where_it_points(tmp_path):
    """Saving a rating opens the run's lock file: a link planted there (pointing at a file that
    does not exist yet, as an attacker would aim at a config folder) is refused, not created."""
    from core.evaluate.ratings import save_rating

    run = make_run(tmp_path / "runs")
    aimed = tmp_path / "cron.d" / "planted"
    aimed.parent.mkdir()
    (run / ".ratings.json.lock").symlink_to(aimed)
    with pytest.raises(OSError):
        save_rating(run, "adapter", "p1", 4, "good", answer="an answer")
    assert not aimed.exists()
    assert not (run / "ratings.json").exists()


@pytest.mark.parametrize("digits", [400, 5000])  # too large for a float; too long for Python to convert
def test_an_enormous_number_in_a_run_folder_breaks_no_page(tmp_path, monkeypatch, digits):
    from conftest import app_at

    root = tmp_path / "runs"
    run = make_run(root, "huge_number")
    (root / ".seeded").write_text("")
    number = "9" * digits
    (run / "metrics.json").write_text(f'{{"train_loss": {number}, "peak_memory_gb": {number}}}')
    (run / "events.jsonl").write_text(f'{{"step": 1, "loss": {number}}}\n{{"step": 2, "loss": 1.5}}\n')
    monkeypatch.setenv("PEFT_RUNS_DIR", str(root))
    loaded = read_run_folder(run)
    assert loaded.broken == (digits > 4300)
    for page, query in (
        ("Home.py", {}),
        ("pages/2_Run.py", {"run": "huge_number"}),
        ("pages/3_Compare.py", {}),
    ):
        app = app_at(page, query)
        app.run()
        assert not app.exception, (page, app.exception)


def test_a_rating_is_refused_rather_than_overwriting_an_unreadable_ratings_file(tmp_path):
    from core.evaluate.ratings import RatingError, save_rating

    run = make_run(tmp_path / "runs")
    (run / "ratings.json").write_text('{"adapter": {"p1": {"rating": 5, "note": "kept"}')  # torn by a crash
    before = (run / "ratings.json").read_bytes()
    with pytest.raises(RatingError, match="not saved"):
        save_rating(run, "adapter", "p2", 3, "", answer="an answer")
    assert (run / "ratings.json").read_bytes() == before


def test_linked_checkpoints_merged_and_gguf_files_are_not_followed(tmp_path):
    """Another run's unfinished checkpoint is not deleted through a planted link, a linked
    merged/ is not measured or deleted, and linked GGUF files are not offered."""
    from core.export.pipeline import delete_merged
    from core.store.files import folder_size
    from core.store.runs import latest_checkpoint, remove_incomplete_checkpoints, run_gguf_files

    root = tmp_path / "runs"
    victim = make_run(root, "victim")
    (victim / "checkpoints" / "checkpoint-9").mkdir(parents=True)  # unfinished, being written
    (victim / "merged").mkdir()
    (victim / "merged" / "model.safetensors").write_bytes(b"x" * 1000)
    (victim / "gguf").mkdir()
    (victim / "gguf" / "victim-q8_0.gguf").write_bytes(b"GGUF")
    planted = make_run(root, "planted")
    (planted / "checkpoints").symlink_to(victim / "checkpoints")
    (planted / "merged").symlink_to(victim / "merged")
    (planted / "gguf").mkdir()
    (planted / "gguf" / "stolen.gguf").symlink_to(victim / "gguf" / "victim-q8_0.gguf")
    (planted / "gguf" / "own.gguf").write_bytes(b"GGUF")

    assert latest_checkpoint(planted) is None
    assert remove_incomplete_checkpoints(planted) == []
    assert (victim / "checkpoints" / "checkpoint-9").is_dir()
    assert folder_size(planted / "merged") == 0 and delete_merged(planted) == 0
    assert (victim / "merged" / "model.safetensors").exists()
    assert [path.name for path in run_gguf_files(planted)] == ["own.gguf"]
    shutil.rmtree(planted / "gguf")
    (planted / "gguf").symlink_to(victim / "gguf")
    assert run_gguf_files(planted) == []


def test_a_lone_surrogate_in_a_run_file_is_refused_on_read(tmp_path, monkeypatch):
    """A JSON escape that decodes to half a character: accepted by json, it would fail every
    later write and render (Home, runs list)."""
    root = tmp_path / "runs"
    run = make_run(root, "odd")
    (run / "status.json").write_text('{"state": "failed", "error": "\\ud800"}')
    (run / "events.jsonl").write_text(
        '{"step": 1, "loss": 2.0, "note": "\\ud800"}\n{"step": 2, "loss": 1.5}\n'
    )
    loaded = read_run_folder(run)
    assert loaded.broken and "status.json cannot be read" in loaded.problems[0]
    records, skipped = read_jsonl(run / "events.jsonl")
    assert [record["step"] for record in records] == [2] and skipped == 1
    (run / "metrics.json").write_text('{"device": "\\ud83d\\ude00"}')  # a real pair still reads
    assert read_json_object(run / "metrics.json") == {"device": "😀"}
    listing = subprocess.run(
        [sys.executable, "-m", "core", "--runs-dir", str(root), "runs", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0 and "odd" in listing.stdout


def test_a_run_folder_that_is_a_link_has_no_job_and_deleting_it_removes_only_the_link(tmp_path):
    """A planted `evil -> real` beside a run whose job records say running: looking at, stopping
    or deleting evil never reads, records or deletes anything of real."""
    from core.jobs.lifecycle import JobError, delete_run, job_view, request_stop

    root = tmp_path / "runs"
    real = make_run(root, "real")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        write_json_atomic(real / "status.json", {**initial_status("running", 30), "pid": sleeper.pid})
        before = (real / "status.json").read_bytes()
        (root / "evil").symlink_to(real)
        view = job_view(root / "evil", "train")
        assert (view.state, view.alive) == (None, False)
        with pytest.raises(JobError):
            request_stop(root / "evil", "train")
        delete_run(root / "evil")
        assert not os.path.lexists(root / "evil")
        assert (real / "status.json").read_bytes() == before and sleeper.poll() is None
        assert not (real / "jobs").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_run_whose_jobs_folder_is_planted_can_still_be_deleted(tmp_path):
    from core.jobs.lifecycle import delete_run

    root = tmp_path / "runs"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = make_run(root, "linked")
    (linked / "jobs").symlink_to(elsewhere)
    filed = make_run(root, "filed")
    (filed / "jobs").write_text("not a folder")
    delete_run(linked)
    delete_run(filed)
    assert list(root.iterdir()) == [] and elsewhere.is_dir() and list(elsewhere.iterdir()) == []


def test_the_sweep_does_not_follow_a_linked_folder(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / ".precious.deadbeef.tmp").write_text("not ours")
    (tmp_path / "gguf").symlink_to(target)
    assert sweep_debris(tmp_path / "gguf") == []
    assert (target / ".precious.deadbeef.tmp").exists()
