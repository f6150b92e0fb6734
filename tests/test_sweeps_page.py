"""The sweep screens through Streamlit's AppTest: the Train page's sweep form, queue controls and
"duplicate, change one field" (the queue's runner is not started here: tests/test_queue.py runs
it), and the Sweeps page's brushing, importance and best member over run folders written as
training writes them."""

from dataclasses import replace

import pytest
from conftest import app_at, charts, heavy_modules_after_rendering, plain, rerun, shown

import ui.sweeps
from core.jobs.queue import enqueue, read_queue, run_item
from core.store.runs import create_run, initial_status, load_run
from core.store.seed import SEED_MARKER
from core.sweeps.definition import grid_members, new_sweep, parse_grid, write_sweep
from core.train.presets import get_preset

SMOKE = {**get_preset("cpu_smoke").config(), "max_steps": 6, "warmup_steps": 1}
TRAIN, SWEEPS = "pages/1_Train.py", "pages/5_Sweeps.py"


@pytest.fixture
def root(runs_root, monkeypatch):
    """A runs root without the lab's runs, whose queue's runner is never started by the pages."""
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    started = []
    monkeypatch.setattr(ui.sweeps, "ensure_runner", lambda root: started.append(root) or False)
    return runs_root


def open_page(page, query=None):
    app = app_at(page, query, timeout=30)
    return rerun(app)


def button(app, label):
    return next(b for b in app.button if b.label.startswith(label))


def test_the_sweep_form_lists_the_members_and_queues_them(root):
    app = open_page(TRAIN)
    app.multiselect(key="sweep_fields").set_value(["lora_r", "learning_rate"])
    rerun(app)
    app.text_input(key="sweep_values_lora_r").set_value("4,0")
    app.text_input(key="sweep_values_learning_rate").set_value("0.01,0.02")
    app.text_input(key="sweep_name").set_value("lr")
    rerun(app)
    error = shown(app.error[0].value)
    assert "2 of 4 member(s) refused" in error and "lr-r0-lr0.01 (lora_r=0, learning_rate=0.01)" in error
    assert not [b for b in app.button if b.label.startswith("Queue 4")]
    app.text_input(key="sweep_values_lora_r").set_value("4,8")
    rerun(app)
    assert {m.label: m.value for m in app.metric}["Members"] == "4"
    table = next(frame.value for frame in app.dataframe if "Run" in frame.value.columns)
    assert list(table["Run"]) == ["lr-r4-lr0.01", "lr-r4-lr0.02", "lr-r8-lr0.01", "lr-r8-lr0.02"]
    button(app, "Queue 4 runs").click()
    rerun(app)
    assert [item.run for item in read_queue(root)] == list(table["Run"])
    assert all(load_run(root, name).state == "queued" for name in table["Run"])
    assert load_run(root, "lr-r8-lr0.02").config["learning_rate"] == 0.02


def test_queue_controls_reorder_and_cancel_the_rest(root):
    for name in ("a", "b", "c"):
        create_run(root, name, SMOKE, status=initial_status("queued", 6))
    enqueue(root, [run_item(name) for name in ("a", "b", "c")])
    app = open_page(TRAIN)
    app.button(key=f"queue_down_{read_queue(root)[0].id}").click()
    rerun(app)
    assert [item.run for item in read_queue(root)] == ["b", "a", "c"]
    app.button(key=f"queue_remove_{read_queue(root)[2].id}").click()
    rerun(app)
    assert [item.run for item in read_queue(root)] == ["b", "a"] and load_run(root, "c").state == "stopped"
    button(app, "Cancel the rest").click()
    rerun(app)
    assert read_queue(root) == [] and load_run(root, "a").state == "stopped"


def test_duplicate_a_run_with_one_field_changed(root):
    create_run(root, "base", SMOKE, status=initial_status("completed", 6))
    app = open_page(TRAIN)
    app.selectbox(key="duplicate_run").set_value("base")
    app.selectbox(key="duplicate_field").set_value("lora_r")
    app.text_input(key="duplicate_value").set_value("8")
    rerun(app)
    button(app, "Queue the copy").click()
    rerun(app)
    copy = load_run(root, "base-r8")
    assert (
        copy.state == "queued"
        and copy.config["lora_r"] == 8
        and copy.config["learning_rate"] == SMOKE["learning_rate"]
    )
    assert [item.run for item in read_queue(root)] == ["base-r8"]


def write_sweep_runs(root, losses):
    """A grid sweep over lora_r x learning_rate whose members completed with `losses` (runtime and
    memory made up too), one failed member at the end."""
    axes = parse_grid(["lora_r=4,8", "learning_rate=0.01,0.02,0.03"], SMOKE)
    members = grid_members("g", SMOKE, axes)
    for index, member in enumerate(members):
        failed = index == len(members) - 1
        status = {
            **initial_status("failed" if failed else "completed", 6),
            "error": "boom" if failed else None,
        }
        metrics = (
            None
            if failed
            else {"final_loss": losses[index], "train_runtime_s": 2.0 + index, "peak_memory_gb": 0.5}
        )
        create_run(root, member.name, member.config, status=status, metrics=metrics)
    sweep = new_sweep("g", SMOKE, preset="cpu_smoke", axes=axes)
    write_sweep(root, replace(sweep, members=[{"run": m.name, "values": m.values} for m in members]))
    return [member.name for member in members]


def test_the_sweep_view_brushes_ranks_and_names_the_best(root):
    names = write_sweep_runs(root, [3.0, 2.0, 1.0, 3.1, 2.1])
    app = open_page(SWEEPS, {"sweep": "g"})
    figures = charts(app)
    dimensions = {d["label"]: d for d in figures["parcoords"]["data"][0]["dimensions"]}
    assert plain(dimensions["learning_rate"]["values"]) == [0.01, 0.02, 0.03, 0.01, 0.02, 0.03]
    importance = {
        trace["name"]: dict(zip(trace["y"], plain(trace["x"]))) for trace in figures["importance"]["data"]
    }
    assert importance["Final loss"]["learning_rate"] > importance["Final loss"]["lora_r"]
    assert any(
        shown(m.value).startswith("[g-r4-lr0.03](Run?run=g-r4-lr0.03): final loss **1**")
        for m in app.markdown
    )
    diff = app.table[0].value
    assert list(diff["field"]) == ["lora_r", "learning_rate"]  # the best member against the base
    assert list(diff["base"]) == ["16", "0.01"] and list(diff["g-r4-lr0.03"]) == ["4", "0.03"]
    table = app.dataframe[0].value
    assert len(table) == len(names)
    app.slider(key="brush_final_loss").set_value((1.0, 2.05))
    rerun(app)
    table = app.dataframe[0].value
    assert [value.split("=")[-1] for value in table["run"]] == ["g-r4-lr0.02", "g-r4-lr0.03"]
    dimensions = {d["label"]: d for d in charts(app)["parcoords"]["data"][0]["dimensions"]}
    assert dimensions["Final loss"]["constraintrange"] == [1.0, 2.05]
    assert {m.label: m.value for m in app.metric} == {
        "Completed": "5",
        "Active": "0",
        "Failed": "1",
        "Stopped": "0",
    }


def test_the_sweep_view_without_sweeps_and_with_a_bad_record(root):
    app = open_page(SWEEPS)
    assert "No sweep yet" in app.info[0].value
    (root / ".sweeps").mkdir()
    (root / ".sweeps" / "bad.json").write_text("{}")
    app = open_page(SWEEPS, {"sweep": "bad"})
    assert "not a sweep record" in shown(app.error[0].value)


def test_the_sweep_view_renders_without_the_training_stack(root):
    write_sweep_runs(root, [3.0, 2.0, 1.0, 3.1, 2.1])
    assert heavy_modules_after_rendering(SWEEPS, {"sweep": "g"}) == []


def test_home_pages_a_sweep_sized_runs_table(root):
    for index in range(130):
        create_run(root, f"run_{index:03d}", SMOKE, status=initial_status("queued", 6))
    app = open_page("Home.py")
    assert {m.label: m.value for m in app.metric}["Runs"] == "130"
    assert len(app.dataframe[0].value) == 100
    app.number_input(key="home_page").set_value(2)
    rerun(app)
    assert len(app.dataframe[0].value) == 30


def test_a_search_view_counts_the_studys_trials(root):
    import optuna

    from core.sweeps.definition import parse_search
    from core.sweeps.search import storage_url

    params = parse_search(["lora_r=int:2:16", "learning_rate=float:0.001:0.1:log"], SMOKE)
    sweep = new_sweep("s", SMOKE, preset="cpu_smoke", search=params, trials=3)
    (root / ".sweeps").mkdir()
    study = optuna.create_study(study_name="s", storage=storage_url(root, "s"))
    distributions = {key: param.distribution() for key, param in params.items()}
    members = []
    for number, (rank, rate, loss) in enumerate([(4, 0.01, 2.0), (8, 0.05, 1.5)]):
        values = {"lora_r": rank, "learning_rate": rate}
        create_run(
            root,
            f"s-t{number}",
            {**SMOKE, **values},
            status=initial_status("completed", 6),
            metrics={"final_loss": loss},
        )
        study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions, value=loss))
        members.append({"run": f"s-t{number}", "values": values})
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    write_sweep(root, replace(sweep, members=members))
    app = open_page(SWEEPS, {"sweep": "s"})
    assert any(shown(c.value).startswith("Optuna's study: 2 complete, 1 fail") for c in app.caption)
    assert any("[s-t1](Run?run=s-t1): final loss **1.5**" in shown(m.value) for m in app.markdown)
    (root / ".sweeps" / "s.db").write_text("not a database")  # a file from elsewhere: no count, no crash
    app = open_page(SWEEPS, {"sweep": "s"})
    assert not any(shown(c.value).startswith("Optuna's study") for c in app.caption)


def test_the_sweep_view_shows_planted_records_and_foreign_studies_without_crashing(root):
    import json
    import sqlite3

    folder = root / ".sweeps"
    folder.mkdir()
    planted = {"name": "p", "kind": "grid", "base": SMOKE, "axes": {"run": [1, 2]}, "members": []}
    (folder / "p.json").write_text(json.dumps(planted))
    app = open_page(SWEEPS, {"sweep": "p"})
    assert "not a sweep record" in shown(app.error[0].value)
    from core.sweeps.definition import parse_search

    write_sweep(root, new_sweep("s", SMOKE, preset="cpu_smoke", search=parse_search(["lora_r=int:2:16"], SMOKE), trials=3))  # fmt: skip
    db = sqlite3.connect(folder / "s.db")
    db.execute("CREATE TABLE studies (study_id INTEGER, study_name TEXT)")
    db.commit()
    db.close()
    size = (folder / "s.db").stat().st_size
    app = open_page(SWEEPS, {"sweep": "s"})
    assert "No member yet" in app.info[0].value and (folder / "s.db").stat().st_size == size


def test_the_train_page_with_a_planted_runner_lock_warns(root):
    create_run(root, "a", SMOKE, status=initial_status("queued", 6))
    enqueue(root, [run_item("a")])
    (root / "elsewhere").mkdir()
    (root / ".queue" / "runner.lock").symlink_to(root / "elsewhere")
    app = open_page(TRAIN)
    assert any("runner" in shown(w.value) and "unknown" in shown(w.value) for w in app.warning)


def test_the_train_page_lists_the_first_items_of_a_long_queue(root):
    names = [f"m{index:02d}" for index in range(25)]
    for name in names:
        create_run(root, name, SMOKE, status=initial_status("queued", 6))
    enqueue(root, [run_item(name) for name in names])
    app = open_page(TRAIN)
    assert (
        len([b for b in app.button if (b.key or "").startswith("queue_")]) == 3 * ui.sweeps.SHOWN_ITEMS + 1
    )  # and "Cancel the rest"
    assert sum(shown(c.value) == "... and 5 more." for c in app.caption) == 2  # the queue and the active runs


def test_a_duplicate_that_cannot_be_queued_leaves_no_run(root):
    create_run(root, "base", SMOKE, status=initial_status("completed", 6))
    (root / ".queue" / ".lock").mkdir(parents=True)  # the queue cannot be changed
    app = open_page(TRAIN)
    app.selectbox(key="duplicate_run").set_value("base")
    app.selectbox(key="duplicate_field").set_value("lora_r")
    app.text_input(key="duplicate_value").set_value("8")
    rerun(app)
    button(app, "Queue the copy").click()
    rerun(app)
    assert any("Nothing was queued" in shown(e.value) for e in app.error)
    assert not (root / "base-r8").exists()
