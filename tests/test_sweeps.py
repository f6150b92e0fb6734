"""Sweep definitions without training: grid expansion and names, dataset_rows, refusals that create
nothing, search specs, the queue file's controls, and Optuna's importance on made-up outcomes."""

import json

import pytest
from conftest import run_core

from core.cli import main
from core.jobs.queue import (
    REMOVED,
    cancel_rest,
    enqueue,
    move_item,
    read_queue,
    retry_failed,
    run_item,
)
from core.store.runs import create_run, initial_status, load_run, update_status
from core.sweeps.definition import (
    Sweep,
    SweepError,
    check_members,
    check_new_sweep,
    duplicate_run,
    grid_members,
    parse_grid,
    parse_search,
    read_sweep,
    record_path,
)
from core.sweeps.outcomes import MemberRow, best_member, importance, objective_value, target_quantile
from core.train.presets import SWEEP_PRESETS, get_preset

SMOKE = get_preset("cpu_smoke").config()


def folders(root):
    """Everything in the runs root (hidden folders included)."""
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def test_a_grid_has_one_member_per_combination_named_from_the_values():
    base = {**get_preset("t1_baseline").config()}
    axes = parse_grid(["lora_r=8,16,64", "dataset_rows=10000,30000"], base)
    members = grid_members("NAME", base, axes)
    assert [m.name for m in members] == [
        "NAME-r8-rows10000",
        "NAME-r8-rows30000",
        "NAME-r16-rows10000",
        "NAME-r16-rows30000",
        "NAME-r64-rows10000",
        "NAME-r64-rows30000",
    ]
    first = members[0]
    assert (
        first.config["lora_r"] == 8 and first.config["split"] == "train[:10000]"
    )  # the base's slice replaced
    assert first.values == {"lora_r": 8, "dataset_rows": 10000}
    floats = grid_members(
        "lr", SMOKE, parse_grid(["learning_rate=0.01,2e-4", "base_model=tiny-llama"], SMOKE)
    )
    assert [m.name for m in floats] == ["lr-lr0.01-tiny", "lr-lr0.0002-tiny"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("lora_rank=8,16", "did you mean lora_r"),
        ("lora_r=8,eight", "must be a whole number"),
        ("lora_r=8,8", "lists 8 twice"),
        ("dataset_rows=0,10", "not a positive count"),
        ("note=a,b", "cannot be swept"),
        ("lora_r", "must look like FIELD=VALUES"),
    ],
)
def test_a_bad_grid_option_says_what_is_wrong(option, message):
    with pytest.raises(SweepError, match=message):
        parse_grid([option], SMOKE)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("lora_r=int:64:4", "LOW must be less than HIGH"),
        ("learning_rate=float:0:1e-3:log", "log scale needs LOW above 0"),
        ("lora_r=int:4:x", "must be int numbers"),
        ("lora_r=normal:4:8", "must be FIELD=int:LOW:HIGH"),
        ("lr_scheduler=cat:linear", "two or more different values"),
    ],
)
def test_a_bad_search_option_says_what_is_wrong(option, message):
    with pytest.raises(SweepError, match=message):
        parse_search([option], SMOKE)


def test_search_specs_round_trip():
    params = parse_search(
        ["lora_r=int:4:64:log", "learning_rate=float:1e-5:1e-3:log", "lr_scheduler=cat:linear,cosine"], SMOKE
    )
    assert {key: param.text() for key, param in params.items()} == {
        "lora_r": "int:4:64:log",
        "learning_rate": "float:1e-05:0.001:log",
        "lr_scheduler": "cat:linear,cosine",
    }
    assert params["lora_r"].distribution().log


def test_members_are_refused_by_name_with_every_reason(runs_root):
    base = {**SMOKE, "max_steps": 6}
    members = grid_members("g", base, parse_grid(["lora_r=0,8", "warmup_steps=1,10"], base))
    queued_run(runs_root, "g-r8-warmup1")
    with pytest.raises(SweepError) as refused:
        check_members(runs_root, members)
    text = str(refused.value)
    assert text.startswith("4 of 4 member(s) refused, nothing was created")
    assert "g-r0-warmup1 (lora_r=0, warmup_steps=1): lora_r: must be from 1" in text
    assert "g-r8-warmup1 (lora_r=8, warmup_steps=1): a run named g-r8-warmup1 already exists" in text
    assert "g-r8-warmup10 (lora_r=8, warmup_steps=10): warmup_steps: is more than max_steps (10 > 6)" in text
    too_long = grid_members("x" * 62, base, parse_grid(["lora_r=8"], base))
    with pytest.raises(SweepError, match="characters long"):
        check_members(runs_root, too_long)


def test_the_command_refuses_an_invalid_grid_and_creates_nothing(runs_root):
    done = run_core(
        "sweep", "bad", "--preset", "cpu_smoke", "--grid", "lora_r=4,0", "--grid", "learning_rate=0.01,0.02",
        runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 1
    assert "bad-r0-lr0.01 (lora_r=0, learning_rate=0.01)" in done.stderr
    assert "bad-r0-lr0.02" in done.stderr and "bad-r4" not in done.stderr  # only the offending members named
    assert folders(runs_root) == []  # no run, no record, no queue


def test_a_dry_run_prints_the_sweep_and_creates_nothing(runs_root):
    done = run_core(
        "sweep", "lr", "--preset", "cpu_smoke", "--grid", "lora_r=4,8", "--grid", "learning_rate=0.01,0.02",
        "--set", "max_steps=6", "--dry-run", runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [m["run"] for m in printed["members"]] == [
        "lr-r4-lr0.01",
        "lr-r4-lr0.02",
        "lr-r8-lr0.01",
        "lr-r8-lr0.02",
    ]
    assert printed["base"]["max_steps"] == 6 and printed["axes"] == {
        "lora_r": [4, 8],
        "learning_rate": [0.01, 0.02],
    }
    assert folders(runs_root) == []


def test_the_command_refuses_what_cannot_be_swept(runs_root, capsys):
    cases = [
        (["--preset", "cpu_smoke"], "give the grid's axes"),
        (
            ["--preset", "cpu_smoke", "--grid", "lora_r=4,8", "--search", "learning_rate=float:0.01:0.1"],
            "not both",
        ),
        (["--preset", "cpu_smoke", "--search", "lora_r=int:4:8", "--trials", "0"], "--trials must be"),
        (["--grid", "lora_r=4,8"], "a sweep needs a base"),
        (["--sweep-preset", "nope"], "no sweep preset named 'nope'"),
        (["--preset", "cpu_smoke", "--grid", "lora_r=4,8", "--set", "lora_rr=3"], "--set: lora_rr"),
        (
            ["--preset", "cpu_smoke", "--search", "lora_r=int:0:8"],
            "lora_r: must be from 1",
        ),  # a corner refused
    ]
    for arguments, message in cases:  # in this process: the command line's own main()
        assert main(["--runs-dir", str(runs_root), "sweep", "s", *arguments]) == 1
        stderr = capsys.readouterr().err
        assert message in stderr, (arguments, stderr)
    assert folders(runs_root) == []


def test_an_eval_loss_objective_needs_a_validation_share(runs_root, tiny_model):
    with pytest.raises(SweepError, match="needs a validation share: a base config with a recipe"):
        check_new_sweep(runs_root, "s", "eval_loss", SMOKE)
    made = run_core(
        "data", "recipe", "held", "--source", "data/sample_sharegpt.jsonl", "--model", "tiny-llama",
        "--validation", "0.25", runs_root=runs_root,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    held = json.loads((runs_root / ".recipes" / "held.json").read_text())
    assert held["validation_rows"]
    whole = {
        **held,
        "name": "whole",
        "train_rows": held["train_rows"] + held["validation_rows"],
        "validation_rows": [],
    }
    (runs_root / ".recipes" / "whole.json").write_text(json.dumps(whole))
    with pytest.raises(SweepError, match="the recipe whole holds out none"):
        check_new_sweep(runs_root, "s", "eval_loss", {**SMOKE, "recipe": "whole"})
    accepted = run_core(
        "sweep", "s", "--preset", "cpu_smoke", "--set", "recipe=held", "--grid", "lora_r=4,8",
        "--objective", "eval_loss", "--dry-run", runs_root=runs_root,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["objective"] == "eval_loss"
    assert sorted(path.name for path in runs_root.iterdir()) == [".recipes"]  # a dry run creates nothing


def test_the_objective_reads_the_runs_outcome_or_says_why_not(runs_root):
    create_run(runs_root, "done", SMOKE, status=initial_status("completed", 2), metrics={"final_loss": 1.5})
    create_run(runs_root, "broke", SMOKE, status={**initial_status("failed", 2), "error": "boom"})
    done, broke = load_run(runs_root, "done"), load_run(runs_root, "broke")
    assert objective_value(done, "final_loss") == (1.5, "")
    assert objective_value(done, "eval_loss") == (
        None,
        "metrics.json has no best_eval_loss: the run had no validation share",
    )
    assert (
        objective_value(done, "checks_passed")[1]
        == "the run's adapter has no evaluation (eval/adapter.jsonl)"
    )
    assert objective_value(broke, "final_loss") == (None, "the run is failed: boom")


def test_the_task2_sweep_preset_is_the_labs_grid(runs_root):
    done = run_core("sweep", "task2", "--sweep-preset", "task2", "--dry-run", runs_root=runs_root)
    # The lab's 4-bit models cannot be planned on this CPU machine: the refusal names each member.
    if done.returncode == 1:
        assert "8 of 8 member(s) refused" in done.stderr and "task2-r16-rows10000-1B" in done.stderr
    else:
        assert [m["run"] for m in json.loads(done.stdout)["members"]][0] == "task2-r16-rows10000-1B"
    preset = SWEEP_PRESETS["task2"]
    base = get_preset(preset.preset).config()
    members = grid_members("task2", base, {key: list(values) for key, values in preset.grid.items()})
    assert len(members) == 8 and members[-1].name == "task2-r64-rows30000-3B"
    assert members[-1].config["split"] == "train[:30000]"


def queued_run(root, name, state="queued"):
    create_run(root, name, {**SMOKE, "max_steps": 2, "warmup_steps": 0}, status=initial_status(state, 2))


def test_the_queue_file_keeps_order_moves_cancels_and_retries(runs_root):
    for name in ("a", "b", "c"):
        queued_run(runs_root, name)
    enqueue(runs_root, [run_item(name, sweep="s") for name in ("a", "b", "c")])
    assert [item.run for item in read_queue(runs_root)] == ["a", "b", "c"]
    move_item(runs_root, read_queue(runs_root)[2].id, -2)
    assert [item.run for item in read_queue(runs_root)] == ["c", "a", "b"]
    assert cancel_rest(runs_root, sweep="other") == []
    assert cancel_rest(runs_root, sweep="s") == ["c", "a", "b"]  # no runner: nothing has started
    assert read_queue(runs_root) == []
    stopped = load_run(runs_root, "a").status
    assert stopped["state"] == "stopped" and stopped["error"] == REMOVED
    update_status(runs_root / "b", state="failed", error="boom")
    update_status(runs_root / "c", state="completed")
    assert retry_failed(runs_root, ["a", "b", "c"], sweep="s") == ["a", "b"]
    assert [(item.run, item.resume) for item in read_queue(runs_root)] == [("a", True), ("b", True)]
    assert retry_failed(runs_root, ["a", "b"], sweep="s") == []  # queued already


def test_a_queue_file_from_elsewhere_is_read_tolerantly(runs_root):
    folder = runs_root / ".queue"
    folder.mkdir(parents=True)
    (folder / "queue.json").write_text(
        json.dumps({"items": [{"id": "1", "run": "../x"}, {"id": "2"}, "junk", {"id": "3", "run": "ok"}]})
    )
    assert [item.run for item in read_queue(runs_root)] == ["ok"]
    (folder / "queue.json").write_text("{not json")
    assert read_queue(runs_root) == []


def test_duplicate_a_run_and_change_one_field(runs_root):
    queued_run(runs_root, "base")
    member = duplicate_run(runs_root, load_run(runs_root, "base").config, "base", "lora_r", "8")
    assert member.name == "base-r8" and member.config["lora_r"] == 8
    with pytest.raises(SweepError, match="already 16"):
        duplicate_run(runs_root, load_run(runs_root, "base").config, "base", "lora_r", "16")


def rows(values):
    """Members with the given (lora_r, learning_rate, final_loss, checks_passed)."""
    return [
        MemberRow(
            f"m{i}",
            "completed",
            {"lora_r": r, "learning_rate": lr},
            {"final_loss": loss, "checks_passed": passed},
            {},
            None,
        )
        for i, (r, lr, loss, passed) in enumerate(values)
    ]


def test_importance_finds_the_field_that_matters():
    sweep = Sweep("g", "grid", SMOKE, axes={"lora_r": [4, 8], "learning_rate": [0.01, 0.02]})
    members = rows(
        [
            (4, 0.01, 3.0, 1),
            (4, 0.02, 2.0, 5),
            (8, 0.01, 3.01, 1),
            (8, 0.02, 2.02, 6),
            (4, 0.01, 3.02, 2),
            (8, 0.02, 2.01, 5),
        ]
    )
    found = importance(sweep, members, "final_loss")
    assert found["learning_rate"] > 4 * found["lora_r"]
    assert importance(sweep, members[:2], "final_loss").startswith("2 member(s) have a final loss")
    assert best_member(sweep, members).run == "m1"  # the lowest final loss
    assert (
        best_member(Sweep("g", "grid", SMOKE, axes=sweep.axes, objective="checks_passed"), members).run
        == "m3"
    )
    assert target_quantile(4) == 0.5 and target_quantile(12) == 0.25 and target_quantile(100) == 0.1


def test_a_sweep_record_that_is_not_one_is_refused(runs_root):
    path = record_path(runs_root, "s")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "s", "kind": "grid"}))
    with pytest.raises(SweepError, match="not a sweep record"):
        read_sweep(runs_root, "s")
    path.unlink()
    path.symlink_to(runs_root)
    with pytest.raises(SweepError):
        read_sweep(runs_root, "s")


def test_members_with_an_unusable_recipe_are_refused(runs_root):
    base = {**SMOKE, "recipe": "missing"}
    with pytest.raises(SweepError, match="no recipe named missing"):
        check_members(runs_root, grid_members("g", base, parse_grid(["lora_r=4,8"], base)))
    with pytest.raises(SweepError, match="the recipe picks the rows: vary recipe, not dataset_rows"):
        check_members(runs_root, grid_members("g", base, parse_grid(["dataset_rows=4,8"], base)))
    assert not runs_root.exists()


def test_the_queue_command_lists_cancels_and_retries(runs_root, capsys):
    def core(*arguments):
        status = main(["--runs-dir", str(runs_root), *arguments])
        return status, capsys.readouterr()

    status, printed = core("sweep", "g", "--preset", "cpu_smoke", "--grid", "lora_r=4,8", "--set", "max_steps=2",
                           "--set", "warmup_steps=0", "--no-start")  # fmt: skip
    assert status == 0 and printed.out.split() == ["g-r4", "g-r8"]
    status, printed = core("queue")
    assert printed.out.splitlines() == [
        "runner: not running; 2 item(s)",
        "   1  g-r4  [sweep g]",
        "   2  g-r8  [sweep g]",
    ]
    status, printed = core("queue", "cancel", "--sweep", "g")
    assert printed.out.strip() == "removed 2 item(s): g-r4, g-r8"
    assert [load_run(runs_root, name).state for name in ("g-r4", "g-r8")] == ["stopped", "stopped"]
    update_status(runs_root / "g-r8", state="completed")
    status, printed = core("queue", "retry", "g", "--no-start")
    assert status == 0 and printed.out.strip() == "queued again: g-r4"
    assert [(item.run, item.resume, item.sweep) for item in read_queue(runs_root)] == [("g-r4", True, "g")]
    status, printed = core("sweep", "g", "--preset", "cpu_smoke", "--grid", "lora_r=16", "--no-start")
    assert status == 1 and "a sweep named g already exists" in printed.err


# --- the reviewer's findings (issue 17) -------------------------------------------------------


def queue_file(root):
    return root / ".queue" / "queue.json"


def test_a_queue_past_a_documents_cap_is_kept_and_one_past_its_own_cap_refused(runs_root, monkeypatch):
    import core.jobs.queue as queue

    enqueue(runs_root, [run_item(f"member-{index:05d}", sweep="big") for index in range(6000)])
    assert queue_file(runs_root).stat().st_size > 1 << 20  # past MAX_DOCUMENT_BYTES
    enqueue(runs_root, [run_item("one-more")])
    assert len(read_queue(runs_root)) == 6001  # nothing wiped
    monkeypatch.setattr(queue, "MAX_QUEUE_BYTES", queue_file(runs_root).stat().st_size + 10)
    with pytest.raises(queue.QueueError, match="would hold more than"):
        enqueue(runs_root, [run_item("too-many")])
    assert len(read_queue(runs_root)) == 6001
    queue_file(runs_root).write_text('{"items": [')  # a file that cannot be read is never written over
    with pytest.raises(queue.QueueError, match="cannot be read"):
        enqueue(runs_root, [run_item("x")])
    assert queue_file(runs_root).read_text() == '{"items": ['


def interrupted_grid(root, name, queued):
    """A grid whose creation was cut short after its record and members, queued or not."""
    from core.sweeps.definition import create_grid, new_sweep

    base = {**SMOKE, "max_steps": 2, "warmup_steps": 0}
    axes = parse_grid(["lora_r=4,8"], base)
    members = check_members(root, grid_members(name, base, axes))
    sweep = new_sweep(name, base, preset="cpu_smoke", axes=axes)
    sweep = Sweep(**{**sweep.__dict__, "members": [{"run": m.name, "values": m.values} for m in members]})
    create_grid(root, sweep, members)
    record = json.loads(record_path(root, name).read_text())
    record_path(root, name).write_text(json.dumps({**record, "creating": True}))
    if not queued:
        cancel_rest(root, sweep=name)
        for member in members:
            update_status(root / member.name, state="queued", error=None)
    return [m.name for m in members]


def test_a_grid_creation_cut_short_is_rolled_back_or_completed_by_the_next_look(runs_root):
    import fcntl
    import os

    from core.sweeps.definition import recover_sweeps

    names = interrupted_grid(runs_root, "cut", queued=False)
    queued_run(runs_root, "cut-r4-other")  # not listed by the record: never touched
    with pytest.raises(SweepError, match="being created"):
        read_sweep(runs_root, "cut")
    lock = os.open(runs_root / ".sweeps" / "cut.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # its creator still works: left alone
    assert recover_sweeps(runs_root) == []
    os.close(lock)
    assert recover_sweeps(runs_root) == ["cut"]
    assert not record_path(runs_root, "cut").exists() and not any((runs_root / n).exists() for n in names)
    assert (runs_root / "cut-r4-other").is_dir()
    status = main(["--runs-dir", str(runs_root), "sweep", "cut", "--preset", "cpu_smoke", "--grid",
                   "lora_r=4,8", "--set", "max_steps=2", "--set", "warmup_steps=0", "--no-start"])  # fmt: skip
    assert status == 0 and read_sweep(runs_root, "cut").run_names == names

    interrupted_grid(runs_root, "done", queued=True)  # cut after queueing: completed
    assert recover_sweeps(runs_root) == ["done"] and read_sweep(runs_root, "done").members


def test_a_look_at_a_search_never_writes_the_file_and_survives_a_foreign_one(runs_root):
    import sqlite3

    from core.sweeps.search import study_counts

    folder = runs_root / ".sweeps"
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "foreign.db")
    db.execute("CREATE TABLE studies (x TEXT)")
    db.commit()
    db.close()
    (folder / "empty.db").write_bytes(b"")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert study_counts(runs_root, "foreign") == {} and study_counts(runs_root, "empty") == {}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def search_sweep(root, name, *, trials=2, objective="final_loss", base=None):
    from core.sweeps.definition import new_sweep, write_sweep

    base = base or SMOKE
    sweep = new_sweep(
        name, base, preset="cpu_smoke", search=parse_search(["lora_r=int:2:16"], SMOKE),
        trials=trials, objective=objective,
    )  # fmt: skip
    write_sweep(root, sweep)
    return sweep


def test_a_new_search_never_inherits_a_leftover_study(runs_root):
    import optuna

    from core.sweeps.search import open_study, storage_url

    (runs_root / ".sweeps").mkdir(parents=True)
    optuna.create_study(study_name="s", storage=storage_url(runs_root, "s"), direction="maximize")
    with pytest.raises(SweepError, match="an earlier search's study"):
        check_new_sweep(runs_root, "s", "final_loss", SMOKE)
    with pytest.raises(SweepError, match="not this search's study"):
        open_study(runs_root, search_sweep(runs_root, "s", objective="final_loss"))


def test_retry_lets_a_search_stopped_by_failures_go_on(runs_root):
    from core.sweeps.definition import retry_sweep
    from core.sweeps.search import advance_search, study_counts

    sweep = search_sweep(runs_root, "f", base={**SMOKE, "recipe": "gone"})  # every trial is refused
    assert advance_search(runs_root, "f") is False and advance_search(runs_root, "f") is False
    assert advance_search(runs_root, "f") is True  # two failures of two trials: stopped
    assert retry_sweep(runs_root, read_sweep(runs_root, "f")) == ["f"]
    assert read_sweep(runs_root, "f").retried_failures == 2
    assert advance_search(runs_root, "f") is False  # a new trial, not stopped at once
    assert study_counts(runs_root, "f") == {"FAIL": 3} and sweep.trials == 2


def test_a_trial_whose_name_was_taken_meanwhile_fails_without_adopting_the_run(runs_root, monkeypatch):
    import optuna

    import core.sweeps.search as search
    from core.sweeps.search import advance_search, storage_url

    search_sweep(runs_root, "a")
    checked = search.check_members

    def check_then_taken(root, members, here=None):
        found = checked(root, members, here)
        queued_run(root, members[0].name)  # someone else's run, made just after the check
        return found

    monkeypatch.setattr(search, "check_members", check_then_taken)
    assert advance_search(runs_root, "a") is False
    [trial] = optuna.load_study(study_name="a", storage=storage_url(runs_root, "a")).trials
    assert trial.state.name == "FAIL" and "run" not in trial.user_attrs
    assert "already exists" in trial.user_attrs["error"] and read_sweep(runs_root, "a").members == []


def planted(record):
    return {"name": "p", "kind": "grid", "base": SMOKE, "objective": "final_loss", **record}


@pytest.mark.parametrize(
    "record",
    [
        planted({"axes": {"lora_r": [[4], {"a": 1}]}}),
        planted({"axes": {"lora_r": [10**400]}}),
        planted({"axes": {"run": [1, 2]}}),
        planted({"axes": {"final_loss": [1, 2]}}),
        planted({"kind": "search", "search": {"lora_r": "int:9:1"}, "trials": 3}),
        planted({"kind": "search", "search": {"lora_r": "int:1:9"}, "trials": 10**30}),
        planted({"axes": {"lora_r": [4]}, "members": [{"run": "p-r4", "values": {"state": 1}}]}),
        planted({"axes": {"lora_r": [4]}, "members": [{"run": "p-r4", "values": {"lora_r": [4]}}]}),
    ],
)
def test_a_planted_or_malformed_record_is_not_a_sweep_record(runs_root, record):
    path = record_path(runs_root, "p")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    with pytest.raises(SweepError, match="not a sweep record"):
        read_sweep(runs_root, "p")


def hold_runner_lock(root):
    """Hold the runner's lock as a live runner does; returns the descriptor to close."""
    import fcntl
    import os

    (root / ".queue").mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / ".queue" / "runner.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def test_nothing_moves_above_the_item_the_runner_works_on(runs_root):
    import os

    from core.jobs.queue import current_item

    enqueue(runs_root, [run_item(name) for name in ("a", "b", "c")])
    document = json.loads(queue_file(runs_root).read_text())
    a, b, c = (item["id"] for item in document["items"])
    queue_file(runs_root).write_text(json.dumps({**document, "working": a}))
    descriptor = hold_runner_lock(runs_root)
    try:
        move_item(runs_root, b, -1)
        move_item(runs_root, c, -2)
        move_item(runs_root, a, 2)
        assert [item.run for item in read_queue(runs_root)] == ["a", "c", "b"]
        document = json.loads(queue_file(runs_root).read_text())
        queue_file(runs_root).write_text(json.dumps({**document, "working": b}))  # a runner after a reorder
        assert current_item(runs_root).run == "b"
    finally:
        os.close(descriptor)
    assert current_item(runs_root) is None  # no runner


def test_a_planted_lock_leaves_the_runner_state_unknown_and_stops_no_runner_by_crashing(runs_root):
    from core.jobs.queue import QueueError, ensure_runner, run_queue, runner_running

    enqueue(runs_root, [run_item("gone")])
    (runs_root / "elsewhere").mkdir()
    (runs_root / ".queue" / "runner.lock").symlink_to(runs_root / "elsewhere")
    with pytest.raises(QueueError, match="unknown"):
        runner_running(runs_root)
    with pytest.raises(QueueError):
        ensure_runner(runs_root)
    (runs_root / ".queue" / "runner.lock").unlink()
    (runs_root / ".queue" / ".lock").unlink()
    (runs_root / ".queue" / ".lock").symlink_to(runs_root / "elsewhere" / "x")
    assert run_queue(runs_root, poll_s=0.01) == 0  # logged, not raised; the item is left queued
    assert [item.run for item in read_queue(runs_root)] == ["gone"]


def test_the_runner_takes_an_item_that_arrives_as_it_lets_its_lock_go(runs_root, monkeypatch):
    import core.jobs.queue as queue

    held = queue._run_held
    arrivals = [run_item("late")]

    def then_one_arrives(root, poll_s):
        result = held(root, poll_s)
        if arrivals:
            enqueue(root, [arrivals.pop()])
        return result

    monkeypatch.setattr(queue, "_run_held", then_one_arrives)
    enqueue(runs_root, [run_item("first")])
    assert queue.run_queue(runs_root, poll_s=0.01) == 2 and read_queue(runs_root) == []


def test_members_whose_names_would_collide_get_a_short_hash(runs_root):
    base = {**SMOKE}
    axes = {"base_model": ["meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"],
            "learning_rate": [0.000123456, 0.0001234564]}  # fmt: skip
    names = [member.name for member in grid_members("n", base, axes)]
    assert len(set(names)) == 4 and all(name.startswith("n-1B-lr0.000123456-") for name in names)
    assert grid_members("n", base, {"lora_r": [4, 8]})[0].name == "n-r4"  # no collision, no hash


def test_duplicate_checks_a_local_dataset_as_the_command_does(runs_root, tmp_path):
    from core.machine.devices import device_facts_from
    from core.sweeps.definition import machine_check

    queued_run(runs_root, "base")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    source = {**load_run(runs_root, "base").config, "dataset": str(bad)}
    check = machine_check(lambda backend: device_facts_from([]))
    with pytest.raises(SweepError, match="no usable conversations"):
        duplicate_run(runs_root, source, "base", "lora_r", "8", check)
