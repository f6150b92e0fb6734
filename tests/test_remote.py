"""Runs mirrored through a remote: push, pull and sync between two runs roots (two sides) through a
folder remote, and through a bucket remote whose three Hub calls are a local stand-in (the Hub
cannot be reached from here: everything but the HTTP is exercised).

The trained run is real: a CPU smoke run of the tiny model trained by `python -m core train`.
"""

import io
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import StandInBucketApi, run_core

from core.evaluate.ratings import load_ratings, save_rating
from core.remote import sync
from core.remote.stores import BucketStore, FolderStore, RemoteError, open_remote
from core.store.files import read_json_object, read_jsonl, write_json_atomic
from core.store.paths import runs_root_side
from core.store.runs import create_run, initial_status, read_run_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_build) -> Path:
    """A runs root holding `smoke`, a completed CPU smoke run (3 steps, 2 checkpoints)."""
    root = tmp_path_factory.mktemp("side-a") / "runs"
    cache = tmp_path_factory.mktemp("cache")
    (cache / "tiny-llama").parent.mkdir(parents=True, exist_ok=True)
    (cache / "tiny-llama").symlink_to(tiny_model_build, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        done = run_core(
            "train",
            "smoke",
            "--preset",
            "cpu_smoke",
            *("--set", "max_steps=3", "--set", "save_steps=2", "--set", "warmup_steps=0"),
            runs_root=root,
        )
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def sides(trained, tmp_path):
    """Side A (a copy of the trained root), side B (empty) and a folder remote."""
    a, b, remote = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    shutil.copytree(trained, a, symlinks=True, ignore=shutil.ignore_patterns(".side", ".sync"))
    for folder in (b, remote):
        folder.mkdir()
    status = read_json_object(a / "smoke" / "status.json")
    write_json_atomic(a / "smoke" / "status.json", {**status, "side": runs_root_side(a)})  # A trained it
    return SimpleNamespace(a=a, b=b, remote=FolderStore(remote), folder=remote)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".sync" not in p.parts}


def test_a_pushed_run_is_pulled_whole_light_files_and_adapter_but_no_checkpoints(sides):
    pushed = sync.push(sides.a, sides.remote)
    assert "smoke/status.json" in pushed.sent and "smoke/adapter/adapter_model.safetensors" in pushed.sent
    assert not any("checkpoints/" in path for path in pushed.sent)
    assert not any(path.startswith("smoke/.") for path in files_under(sides.folder))  # no locks, no hidden
    pulled = sync.pull(sides.b, sides.remote)
    assert sorted(pulled.received) == sorted(pushed.sent) and pulled.problems == []
    run = read_run_folder(sides.b / "smoke")
    assert not run.broken and run.state == "completed" and run.metrics["steps"] == 3
    assert read_jsonl(sides.b / "smoke" / "events.jsonl") == read_jsonl(sides.a / "smoke" / "events.jsonl")
    assert not (sides.b / "smoke" / "checkpoints").exists()
    with_checkpoints = sync.push(sides.a, sides.remote, extras=["checkpoints"])
    assert with_checkpoints.sent and all("/checkpoints/checkpoint-" in p for p in with_checkpoints.sent)
    sync.pull(sides.b, sides.remote, extras=["checkpoints"])
    assert (sides.b / "smoke" / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_unchanged_files_are_not_sent_again_and_a_changed_one_is(sides):
    sync.push(sides.a, sides.remote)
    sync.pull(sides.b, sides.remote)
    assert sync.push(sides.a, sides.remote).sent == [] and sync.pull(sides.b, sides.remote).received == []
    with (sides.a / "smoke" / "train.log").open("a") as log:
        log.write("one more line\n")
    assert sync.push(sides.a, sides.remote).sent == ["smoke/train.log"]
    assert sync.pull(sides.b, sides.remote).received == ["smoke/train.log"]
    assert (sides.b / "smoke" / "train.log").read_text().endswith("one more line\n")


def test_each_side_keeps_its_own_files_and_ratings_travel_back(sides):
    sync.push(sides.a, sides.remote)
    sync.pull(sides.b, sides.remote)
    answer = "The sky is blue."
    save_rating(sides.b / "smoke", "adapter", "vpn", 4, "good", answer=answer)  # B's dashboard rates
    # B's copy of A's status is a mirror: B never sends it, even changed (a hostile edit)
    write_json_atomic(sides.b / "smoke" / "status.json", {"state": "failed", "side": runs_root_side(sides.a)})
    pushed = sync.push(sides.b, sides.remote)
    assert pushed.sent == ["smoke/ratings.json"]
    # the remote's copy of A's status is changed behind A's back: A's own stays
    write_json_atomic(sides.folder / "smoke" / "status.json", {"state": "failed", "side": "someone"})
    pulled = sync.pull(sides.a, sides.remote)
    assert pulled.received == ["smoke/ratings.json"] and "smoke/status.json" in pulled.kept
    assert read_run_folder(sides.a / "smoke").state == "completed"
    assert load_ratings(sides.a / "smoke")["adapter"]["vpn"]["rating"] == 4


def test_both_sides_syncing_at_once_lose_nothing(sides):
    """A appends events and pushes; B rates and syncs; both sync in loops at the same time."""
    sync.push(sides.a, sides.remote)
    sync.pull(sides.b, sides.remote)
    failures = []

    def side_a():
        try:
            for step in range(40):
                with (sides.a / "smoke" / "train.log").open("a") as log:
                    log.write(f"line {step}\n")
                sync.pull(sides.a, sides.remote)
                sync.push(sides.a, sides.remote)
        except Exception as exc:  # reported below: a thread's failure must fail the test
            failures.append(exc)

    def side_b():
        try:
            for number in range(40):
                save_rating(sides.b / "smoke", "adapter", f"p{number}", 1 + number % 5, "", answer="x")
                sync.pull(sides.b, sides.remote)
                sync.push(sides.b, sides.remote)
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=side_a), threading.Thread(target=side_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    sync.pull(sides.a, sides.remote)
    sync.pull(sides.b, sides.remote)
    assert (
        len(load_ratings(sides.a / "smoke")["adapter"])
        == 40
        == len(load_ratings(sides.b / "smoke")["adapter"])
    )
    log_a = (sides.a / "smoke" / "train.log").read_text()
    assert log_a.endswith("line 39\n") and (sides.b / "smoke" / "train.log").read_text() == log_a


def test_what_a_remote_holds_is_checked_before_it_lands(sides, monkeypatch):
    sync.push(sides.a, sides.remote)
    remote = sides.folder
    (remote / "bad name").mkdir()
    (remote / "bad name" / "status.json").write_text("{}")
    (remote / "smoke" / "evil.sh").write_text("rm -rf /")
    (remote / "smoke" / "jobs").mkdir(exist_ok=True)
    (remote / "smoke" / "jobs" / ".train.lock").write_text("")
    outside = sides.b.parent / "outside.txt"
    outside.write_text("secret")
    (remote / "smoke" / "eval").mkdir(exist_ok=True)
    (remote / "smoke" / "eval" / "adapter.jsonl").symlink_to(outside)
    monkeypatch.setattr(sync, "LIGHT_FILE_BYTES", 4096)
    (remote / "smoke" / "train.log").write_text("x" * 5000)
    pulled = sync.pull(sides.b, sides.remote)
    assert sorted(p.name for p in sides.b.iterdir() if not p.name.startswith(".")) == ["smoke"]
    assert not (sides.b / "smoke" / "evil.sh").exists() and not (sides.b / "smoke" / "eval").exists()
    assert pulled.problems == ["smoke/train.log: 5,000 bytes, more than 4,096: not fetched"]
    assert not (sides.b / "smoke" / "train.log").exists() and (sides.b / "smoke" / "status.json").is_file()


def test_a_bucket_remote_carries_a_run_through_the_hub_calls(sides, tmp_path):
    api = StandInBucketApi(tmp_path / "hub")
    store = open_remote("hf://buckets/lab/runs/team", api=api, token="hf_test")
    assert isinstance(store, BucketStore) and store.name == "hf://buckets/lab/runs/team"
    pushed = sync.push(sides.a, store)
    assert (tmp_path / "hub" / "lab" / "runs" / "team" / "smoke" / "status.json").is_file()
    assert sorted(sync.pull(sides.b, store).received) == sorted(pushed.sent)
    assert read_run_folder(sides.b / "smoke").state == "completed"
    assert sync.push(sides.a, store).sent == []  # stamps (content hashes) unchanged: nothing sent
    assert all("hf_test" in call for call in api.calls if call.startswith(("list", "batch")))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hf://buckets/only-namespace", "not a bucket remote"),
        ("hf://buckets/a/b/../c", "not a bucket remote"),
        ("s3://bucket/x", "a remote is hf://buckets/"),
        ("/no/such/folder", "does not exist"),
    ],
)
def test_a_bad_remote_is_refused_with_the_reason(spec, message):
    with pytest.raises(RemoteError, match=message):
        open_remote(spec)


def test_the_command_line_pushes_pulls_and_refuses_bad_arguments(sides):
    done = run_core("runs", "push", str(sides.folder), runs_root=sides.a)
    assert done.returncode == 0 and "push" in done.stderr and "sent" in done.stderr
    done = run_core("runs", "sync", str(sides.folder), "smoke", runs_root=sides.b)
    assert done.returncode == 0, done.stderr
    assert read_run_folder(sides.b / "smoke").state == "completed"
    done = run_core("runs", "pull", str(sides.folder), "--with", "logs", runs_root=sides.b)
    assert done.returncode != 0 and "unknown --with logs" in done.stderr
    done = run_core("runs", "pull", "/no/such/remote", runs_root=sides.b)
    assert done.returncode != 0 and "does not exist" in done.stderr
    done = run_core("runs", "push", str(sides.folder), "../x", runs_root=sides.a)
    assert done.returncode != 0


def test_a_runs_root_keeps_one_side_name(tmp_path):
    first = runs_root_side(tmp_path / "x")
    assert runs_root_side(tmp_path / "x") == first != runs_root_side(tmp_path / "y")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / ".side").write_text("bad name with spaces\n")
    assert " " not in runs_root_side(tmp_path / "z")


def test_a_queued_run_made_here_is_sent_once_and_never_replaced(sides):
    create_run(sides.b, "queued_here", {"base_model": "x"}, status=initial_status("queued", 10))
    assert "queued_here/config.json" in sync.push(sides.b, sides.remote).sent
    write_json_atomic(sides.folder / "queued_here" / "config.json", {"base_model": "changed"})
    assert sync.pull(sides.b, sides.remote).received == []
    assert read_json_object(sides.b / "queued_here" / "config.json") == {"base_model": "x"}


def test_a_run_trained_with_sync_is_watched_live_and_stopped_from_another_side(tmp_path, tiny_model):
    """Side A trains with --sync FOLDER; side B (a second dashboard) pulls, sees it run, and asks
    it to stop through the remote: A's job stops with a checkpoint, and B sees it stopped."""
    import subprocess
    import sys
    import time

    from conftest import PROJECT_DIR

    a, b, folder = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    for path in (a, b, folder):
        path.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "core", "--runs-dir", str(a), "train", "smoke", "--preset", "cpu_smoke"]
        + ["--set", "max_steps=2000", "--set", "logging_steps=1", "--set", "save_steps=1000"]
        + ["--sync", str(folder), "--sync-every", "1"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = FolderStore(folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline and job.poll() is None, "no live run seen from side B"
            sync.pull(b, store)
            status = (
                read_json_object(b / "smoke" / "status.json")
                if (b / "smoke" / "status.json").is_file()
                else {}
            )
            if status.get("state") == "running" and status.get("step", 0) >= 3:
                break
            time.sleep(0.5)
        assert read_jsonl(b / "smoke" / "events.jsonl")[0]  # the events arrive as they are logged
        sync.request_remote_stop(b, store, "smoke")
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    stopped = read_run_folder(a / "smoke")
    assert stopped.state == "stopped" and list((a / "smoke" / "checkpoints").iterdir())
    assert "a stop was requested through" in (a / "smoke" / "train.log").read_text()
    sync.pull(b, store)
    assert read_run_folder(b / "smoke").state == "stopped"
    assert read_json_object(b / "smoke" / "status.json")["step"] == stopped.status["step"] < 2000


def test_a_run_resumed_on_another_side_is_handed_over_and_never_sent_back_and_forth(sides):
    """A trained `smoke` and pushed it; B pulls it and resumes it (a later job, B's side): A takes
    B's files from then on and never sends its old ones over them."""
    sync.push(sides.a, sides.remote)
    sync.pull(sides.b, sides.remote)
    status = read_json_object(sides.b / "smoke" / "status.json")
    resumed = {**status, "side": runs_root_side(sides.b), "started_at": "2099-01-01T00:00:00Z", "step": 5}
    write_json_atomic(sides.b / "smoke" / "status.json", resumed)
    assert sync.push(sides.b, sides.remote).sent == ["smoke/status.json"]
    assert sync.pull(sides.a, sides.remote).received == ["smoke/status.json"]
    assert read_json_object(sides.a / "smoke" / "status.json")["step"] == 5
    for _ in range(2):
        assert sync.push(sides.a, sides.remote).sent == [] and sync.push(sides.b, sides.remote).sent == []
        assert (
            sync.pull(sides.a, sides.remote).received == []
            and sync.pull(sides.b, sides.remote).received == []
        )
    assert read_json_object(sides.folder / "smoke" / "status.json")["step"] == 5


def test_a_different_run_of_the_same_name_is_not_merged(sides):
    create_run(sides.a, "demo", {"base_model": "mine"}, status=initial_status("queued", 10))
    create_run(sides.b, "demo", {"base_model": "theirs"}, status=initial_status("queued", 10))
    sync.push(sides.b, sides.remote)
    pulled = sync.pull(sides.a, sides.remote, ["demo"])
    assert pulled.received == [] and pulled.problems == [
        "demo: a different run of that name is here (another config): not merged"
    ]
    assert read_json_object(sides.a / "demo" / "config.json") == {"base_model": "mine"}


def test_a_link_planted_in_a_folder_remote_is_never_followed_out_of_it(sides, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (sides.folder / "smoke").symlink_to(victim, target_is_directory=True)
    pushed = sync.push(sides.a, sides.remote)
    assert pushed.sent == [] and pushed.problems and all("is not a folder" in p for p in pushed.problems)
    assert list(victim.iterdir()) == []  # nothing written through the link
    with pytest.raises(RemoteError, match="is not a folder"):
        sides.remote.read("smoke/status.json", io.BytesIO())
