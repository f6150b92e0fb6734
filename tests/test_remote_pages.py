"""The dashboard with a runs remote (PEFT_RUNS_REMOTE, a folder here): pages pull what another side
pushed, show where a run elsewhere runs and how fresh the copy is, and stop it through the
remote. Real AppTest runs; the other side is a runs root whose files are written as its job
writes them."""

import socket

import pytest
from conftest import app_at, rerun, shown

from core.remote import sync
from core.remote.dashboard import _syncs
from core.remote.stores import FolderStore
from core.store.files import read_json_object, write_json_atomic
from core.store.paths import runs_root_side
from core.store.runs import create_run, initial_status, read_run_folder


@pytest.fixture
def remote_with_a_run_elsewhere(tmp_path, runs_root, monkeypatch):
    """Side A (another runs root on this machine, as two dashboards in one test must be) has `far`
    running and has pushed it to a folder remote."""
    a, folder = tmp_path / "a", tmp_path / "remote"
    folder.mkdir()
    create_run(
        a, "far", {"base_model": "tiny-llama", "max_steps": 100}, status=initial_status("running", 100)
    )
    status = read_json_object(a / "far" / "status.json")
    status.update(
        side=runs_root_side(a),
        host=socket.gethostname(),
        pid=4242,
        step=12,
        started_at="2026-11-30T10:00:00+00:00",
    )
    write_json_atomic(a / "far" / "status.json", status)
    (a / "far" / "events.jsonl").write_text('{"step": 12, "loss": 1.5, "elapsed_s": 30.0}\n')
    sync.push(a, FolderStore(folder))
    monkeypatch.setenv("PEFT_RUNS_REMOTE", str(folder))
    _syncs.clear()  # each test's dashboard syncs afresh
    yield folder
    _syncs.clear()


def test_a_run_elsewhere_is_pulled_shown_where_it_runs_and_stopped_through_the_remote(
    remote_with_a_run_elsewhere, runs_root
):
    app = rerun(app_at("pages/2_Run.py", {"run": "far"}))
    assert read_run_folder(runs_root / "far").state == "running"  # pulled when the page opened
    captions = [shown(c.value) for c in app.sidebar.caption]
    assert any("Runs remote" in c and "synced 0 s ago" in c for c in captions), captions
    info = " ".join(shown(i.value) for i in app.info)
    assert "Runs on" in info and runs_root_side(remote_with_a_run_elsewhere.parent / "a") in info
    labels = [b.label for b in app.button]
    assert "Stop (through the remote)" in labels and "Stop" not in labels and "Delete" not in labels
    next(b for b in app.button if b.label == "Stop (through the remote)").click()
    rerun(app)
    request = read_json_object(remote_with_a_run_elsewhere / "far" / "stop-request.json")
    assert request["side"] == runs_root_side(runs_root) and request["kind"] == "train"
    assert read_run_folder(runs_root / "far").state == "running"  # this copy is not touched: A's job stops


def test_without_a_remote_a_copy_of_a_run_elsewhere_says_so_and_is_never_recorded_dead(
    remote_with_a_run_elsewhere, runs_root, monkeypatch
):
    sync.pull(runs_root, FolderStore(remote_with_a_run_elsewhere))
    monkeypatch.delenv("PEFT_RUNS_REMOTE")
    app = rerun(app_at("pages/2_Run.py", {"run": "far"}))
    assert "set PEFT_RUNS_REMOTE" in " ".join(shown(i.value) for i in app.info)
    assert "Stop (through the remote)" not in [b.label for b in app.button]
    assert read_run_folder(runs_root / "far").state == "running"  # not "failed: process died"


def test_a_remote_that_cannot_be_reached_is_a_warning_not_a_broken_page(runs_root, monkeypatch, tmp_path):
    monkeypatch.setenv("PEFT_RUNS_REMOTE", str(tmp_path / "gone"))
    _syncs.clear()
    app = rerun(app_at("Home.py"))
    assert any("does not exist" in shown(w.value) for w in app.sidebar.warning)
    _syncs.clear()
