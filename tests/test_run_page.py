"""The Run page (pages/2_Run.py, `Run?run=NAME`) through Streamlit's AppTest: the run the URL
names, the picker, live progress with Stop, Resume and Delete, and the Evaluate and Export panels
of a completed run.

The jobs are real subprocesses of the tiny Llama started by the page; the test reruns the page as
its live view's timer would, and reads what it shows.
"""

import json
import os
import signal
import time

import pytest
from conftest import app_at, heavy_modules_after_rendering, shown, train_smoke_run
from streamlit.testing.v1 import AppTest

from core.evaluate.prompt_sets import save_prompt_set
from core.jobs.lifecycle import job_view
from core.store.files import read_json_object
from core.store.runs import create_run, initial_status
from core.store.seed import SEED_MARKER, import_seed_runs
from core.train.config import default_config
from core.train.presets import get_preset

RUN = "pages/2_Run.py"


@pytest.fixture
def root(runs_root):
    """A runs root without the lab's runs (seeded once, then deleted)."""
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    return runs_root


def smoke_config(**changes) -> dict:
    return {**get_preset("cpu_smoke").config(), "warmup_steps": 0, **changes}


def open_page(run: str | None) -> AppTest:
    app = app_at(RUN, {"run": run} if run is not None else {}, timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def button(app: AppTest, label: str):
    return next(b for b in app.button if b.label.startswith(label))


def labels(app: AppTest) -> list[str]:
    return [b.label for b in app.button]


def heading(app: AppTest) -> str:
    """The run's heading as the browser shows it (the name's markdown escapes taken out)."""
    return shown(next(m.value for m in app.markdown if m.value.startswith("### ")))


def links(app: AppTest) -> dict[str, tuple[str, str]]:
    """The page links by label: (page, query string)."""
    return {link.proto.label: (link.proto.page, link.proto.query_string) for link in app.get("page_link")}


def rerun_until(app: AppTest, condition, timeout: float = 120.0) -> None:
    """Rerun the page (as its live view's timer does) until `condition(app)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        app.run()
        assert not app.exception, app.exception
        if condition(app):
            return
        assert time.monotonic() < deadline, [m.value for m in app.markdown][:3]
        time.sleep(0.5)


def start_and_follow(app: AppTest, label: str, state_file) -> None:
    """Click the panel's button, then follow the page until its job's state file says completed."""
    button(app, label).click().run()
    assert not app.error, [e.value for e in app.error]
    rerun_until(app, lambda a: read_json_object(state_file)["state"] == "completed")
    app.run()


def status(root, name: str) -> dict:
    return read_json_object(root / name / "status.json")


def start_from_the_page(root, name: str, **changes) -> AppTest:
    """A queued run as the Train page creates it, started with the Run page's Start button."""
    create_run(root, name, smoke_config(**changes), status=initial_status("queued", changes.get("max_steps")))
    app = open_page(name)
    assert heading(app) == f"### ⏳ queued · {name}" and "Queued but not started." in [
        i.value for i in app.info
    ]
    button(app, "Start").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert job_view(root / name, "train").pid is not None
    return app


def test_the_page_shows_the_run_its_url_names(runs_root):
    import_seed_runs(runs_root)
    app = open_page("model_centric_1B_r64_10k_600steps")
    assert app.title[0].value == "Run"
    assert heading(app) == "### ✅ completed · model_centric_1B_r64_10k_600steps"
    assert app.selectbox(key="run_page_pick").value == "model_centric_1B_r64_10k_600steps"
    assert app.query_params == {"run": "model_centric_1B_r64_10k_600steps"}
    assert app.get("progress")[0].proto.text == "step 600/600"
    assert links(app) == {
        "Compare": ("Compare", "runs=model_centric_1B_r64_10k_600steps")
    }  # imported: no Train link
    assert not [label for label in labels(app) if label.startswith(("Stop", "Resume", "Restart", "Start"))]
    assert "Delete…" in labels(app)
    assert [expander.label for expander in app.expander][-2:] == ["Config", "Metrics"]
    assert not app.warning and not app.error


def test_a_shared_link_to_a_lab_run_works_in_a_new_runs_folder(runs_root):
    app = open_page(
        "baseline_1B_r16_10k_600steps"
    )  # the first page this session opens: it seeds, as Home does
    assert heading(app) == "### ✅ completed · baseline_1B_r16_10k_600steps"


def test_an_unknown_run_is_said_and_a_picker_offered(root):
    for name in ("first", "second"):
        create_run(root, name, smoke_config(), status=initial_status("stopped", 30))
    app = open_page("gone")
    assert [shown(w.value) for w in app.warning] == [
        f"There is no run named 'gone' in {root}; pick one below."
    ]
    picker = app.selectbox(key="run_page_pick")
    assert picker.value is None and set(picker.options) == {"first", "second"}
    assert not [m for m in app.markdown if m.value.startswith("### ")]  # no run shown that was not asked for
    assert app.query_params == {"run": "gone"}
    picker.select("second").run()
    assert heading(app) == "### ⏹️ stopped · second" and app.query_params == {"run": "second"}
    assert not app.warning


def test_each_pick_writes_its_run_to_the_url(runs_root):
    import_seed_runs(runs_root)
    app = open_page(None)  # from the sidebar: the newest run
    first = app.selectbox(key="run_page_pick").value
    assert app.query_params == {"run": first} and heading(app).endswith(first)
    for name in ("exp3_1B_10k_600steps", "model2_3B_r64_30k_400steps", "baseline_1B_r16_10k_600steps"):
        app.selectbox(key="run_page_pick").select(name).run()  # pick after pick: none is lost
        assert not app.exception, app.exception
        assert app.query_params == {"run": name} and heading(app) == f"### ✅ completed · {name}"
    app.query_params = {"run": "exp3_1B_10k_600steps"}  # a link to another run, from another page
    app.run()
    assert app.selectbox(key="run_page_pick").value == "exp3_1B_10k_600steps"
    assert heading(app).endswith("exp3_1B_10k_600steps")


def test_the_open_run_survives_a_visit_to_another_page(runs_root):
    """Reached again by the sidebar (no run in the URL), the page shows the run it showed, and says so
    in its URL again."""
    import_seed_runs(runs_root)
    app = open_page("exp3_1B_10k_600steps")
    app.switch_page("Home.py")
    app.query_params = {}
    app.run()
    app.switch_page(RUN)
    app.query_params = {}
    app.run()
    assert not app.exception, app.exception
    assert app.selectbox(key="run_page_pick").value == "exp3_1B_10k_600steps"
    assert app.query_params == {"run": "exp3_1B_10k_600steps"} and heading(app).endswith(
        "exp3_1B_10k_600steps"
    )


def test_a_trained_runs_page_links_to_a_new_run_from_its_config_and_to_compare(root):
    create_run(root, "mine", smoke_config(), status=initial_status("stopped", 30))
    app = open_page("mine")
    assert links(app) == {
        "New run from this config": ("Train", "from=mine"),
        "Compare": ("Compare", "runs=mine"),
    }


def test_stop_ends_a_running_job_stopped_and_resume_continues_it(root, tiny_model):
    app = start_from_the_page(root, "stopme", max_steps=45, save_steps=1000)
    rerun_until(app, lambda a: (status(root, "stopme").get("step") or 0) >= 3)
    assert heading(app) == "### 🔄 running · stopme" and "Delete…" not in labels(app)
    pid = job_view(root / "stopme", "train").pid
    os.killpg(pid, signal.SIGSTOP)  # hold the job still, so the page is seen between the request and the end
    try:
        button(app, "Stop").click().run()
        assert not app.exception, app.exception
        stopping = button(app, "Stopping…")
        assert stopping.disabled and "Stop" not in labels(app)
        assert any(w.value.startswith("Stopping…") for w in app.warning)
    finally:
        os.killpg(pid, signal.SIGCONT)
    rerun_until(app, lambda a: "stopped" in heading(a), timeout=60)
    stopped_at = status(root, "stopme")["step"]
    assert button(app, "Resume from").label == f"Resume from checkpoint-{stopped_at}"

    button(app, "Resume from").click().run()
    rerun_until(app, lambda a: "completed" in heading(a))
    final = status(root, "stopme")
    assert (final["step"], final["resumes"]) == (45, 1)


def test_delete_asks_first_never_touches_a_running_job_and_says_it_is_done(root, tiny_model):
    app = start_from_the_page(root, "deleteme", max_steps=400)
    rerun_until(app, lambda a: "running" in heading(a))
    assert "Delete…" not in labels(app)  # not while it runs
    button(app, "Stop").click().run()
    rerun_until(app, lambda a: "stopped" in heading(a), timeout=60)

    button(app, "Delete…").click().run()
    assert any("Delete deleteme" in w.value for w in app.warning)
    button(app, "Cancel").click().run()
    assert (root / "deleteme").is_dir() and not any("Delete deleteme" in w.value for w in app.warning)
    button(app, "Delete…").click().run()
    button(app, "Yes, delete deleteme").click().run()
    assert not app.exception, app.exception
    assert not (root / "deleteme").exists()
    assert [toast.value for toast in app.toast] == ["Deleted deleteme."]
    assert "run" not in app.query_params and any(i.value == "No runs yet." for i in app.info)
    app.run()
    assert not app.toast  # said once


def test_deleting_a_run_opens_the_next_one(root):
    for name in ("keep", "drop"):
        create_run(root, name, smoke_config(), status=initial_status("stopped", 30))
    app = open_page("drop")
    button(app, "Delete…").click().run()
    button(app, "Yes, delete drop").click().run()
    assert [toast.value for toast in app.toast] == ["Deleted drop."]
    assert app.query_params == {"run": "keep"} and heading(app).endswith("keep")


def test_a_completed_run_is_evaluated_from_its_page_as_a_job(runs_root, tiny_model):
    train_smoke_run("evalme", runs_root, max_steps=4)
    app = open_page("evalme")
    assert [m.value for m in app.markdown if m.value.startswith("####")] == [
        "#### Evaluate",
        "#### Benchmarks",
        "#### Export to GGUF",
    ]
    app.number_input(key="eval_max_new_tokens").set_value(8).run()
    start_and_follow(app, "Evaluate", runs_root / "evalme" / "jobs" / "eval.json")
    table = app.dataframe[-1].value
    assert list(table["Variant"]) == ["adapter"] and table["Answers"][0].endswith("/10 passed")
    assert any(c.value.startswith("Last evaluation: ✅ completed") for c in app.caption)
    rows = [
        json.loads(line)
        for line in (runs_root / "evalme" / "eval" / "adapter.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 10 and all(row["max_new_tokens"] == 8 for row in rows)


def test_export_refuses_a_bad_hub_repo_before_starting_anything(runs_root, tiny_model, monkeypatch):
    train_smoke_run("exportme", runs_root, max_steps=2)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    app = open_page("exportme")
    app.text_input(key="export_repo").input("not a repo").run()
    button(app, "Export").click().run()
    assert any("invalid repo id 'not a repo'" in shown(e.value) for e in app.error)
    app.text_input(key="export_repo").input("someone/tiny").run()
    button(app, "Export").click().run()
    assert any("no Hugging Face token" in e.value for e in app.error)
    assert not (runs_root / "exportme" / "jobs" / "export.json").exists()


def test_a_completed_run_is_exported_from_its_page_as_a_job(
    runs_root, tiny_model, converter_dir, monkeypatch
):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(converter_dir))
    train_smoke_run("shipme", runs_root, max_steps=2)
    app = open_page("shipme")
    app.multiselect(key="export_quants").set_value(["f16"]).run()
    start_and_follow(app, "Export", runs_root / "shipme" / "jobs" / "export.json")
    files = app.dataframe[-1].value
    assert list(files["File"]) == ["gguf/shipme-f16.gguf"] and files["Verification"][0].startswith("verified")
    assert (runs_root / "shipme" / "gguf" / "shipme-f16.gguf").is_file()
    assert "gguf:shipme-f16.gguf" in app.selectbox(key="eval_variant").options
    button(app, "Delete merged/").click().run()
    assert not (runs_root / "shipme" / "merged").exists()


def test_odd_run_folders_show_without_breaking_the_page_and_a_broken_one_can_be_deleted(root):
    odd = create_run(
        root,
        "odd",
        smoke_config(),
        status={**initial_status("stopped"), "step": "x", "max_steps": "many", "training_s": "long"},
    )
    (odd / "events.jsonl").write_text(
        '{"loss": "high"}\n{"step": 2, "loss": "nan", "memory_gb": "lots"}\n'
        '{"step": 3, "loss": 6.5, "elapsed_s": 1.5}\n{"torn'
    )
    (odd / "eval").mkdir()
    (odd / "eval" / "adapter.jsonl").write_text(
        '{"prompt_id": "p1", "passed": "yes", "latency_s": "slow", "prompt_set": 5}\n'
    )
    (odd / "export.json").write_text(
        '{"files": ["x", {"size": "big", "verification": {"agreement": "all"}}]}'
    )
    (odd / "adapter").mkdir()
    status = {**initial_status("completed"), "step": 2}
    done = create_run(root, "done_odd", smoke_config(), status=status)
    (done / "adapter").mkdir()
    (done / "eval").mkdir()
    (done / "eval" / "adapter.jsonl").write_text((odd / "eval" / "adapter.jsonl").read_text())
    (done / "export.json").write_text((odd / "export.json").read_text())
    app = open_page("done_odd")  # the Evaluate and Export panels over files from elsewhere
    assert not app.exception, app.exception
    assert [frame.value.to_dict("records") for frame in app.dataframe][:2] == [
        [
            {
                "Variant": "adapter",
                "Prompt set": None,
                "Answers": "0/1 passed",
                "Mean latency (s)": None,
                "Evaluated": None,
            }
        ],
        [
            {
                "File": None,
                "Type": None,
                "Size (MB)": 0.0,
                "sha256": None,
                "Verification": "FAILED verification: see export.json (0/0 greedy answers exact, token agreement 0.00)",
            }
        ],
    ]
    broken = create_run(root, "broken", smoke_config())
    (broken / "status.json").write_text("{not json")
    app = open_page("odd")
    assert heading(app).endswith("stopped · odd")
    assert next(m for m in app.metric if m.label == "Loss").value == "6.5000"
    app.selectbox(key="run_page_pick").select("broken").run()
    assert not app.exception, app.exception
    assert any("This run folder is broken" in e.value for e in app.error)
    button(app, "Delete…").click().run()
    button(app, "Yes, delete broken").click().run()
    assert not broken.exists() and odd.exists()


def test_a_completed_runs_page_imports_no_training_or_inference_library(runs_root, tiny_model):
    train_smoke_run("light", runs_root, max_steps=2)
    assert heavy_modules_after_rendering(RUN, {"run": "light"}) == []


def test_the_evaluate_panel_says_how_code_checks_are_isolated(runs_root, monkeypatch):
    """With bubblewrap (installed by make test) the panel names it; with bwrap missing from PATH
    it says code checks will not run, and with PEFT_UNISOLATED_CODE_CHECKS=1 that they run
    behind an audit hook only."""
    import_seed_runs(runs_root)
    path = create_run(runs_root, "done", default_config(), status=initial_status("completed", 30))
    (path / "adapter").mkdir()
    app = open_page("done")
    assert any("bubblewrap" in caption.value for caption in app.caption)
    monkeypatch.setenv("PATH", "/nonexistent")
    app = open_page("done")
    assert any("are not run" in shown(w.value) and "bwrap" in shown(w.value) for w in app.warning)
    monkeypatch.setenv("PEFT_UNISOLATED_CODE_CHECKS", "1")
    app = open_page("done")
    assert any("audit hook only" in shown(w.value) for w in app.warning)


def test_the_evaluate_panel_tries_an_answer_on_a_prompts_checks(runs_root):
    """The "Try an answer" box: the lab's Swedish prompt on T0's answer, then on a correct Swedish
    variant no reference lists (needs a judge), then on a reference with a leaked header."""
    import_seed_runs(runs_root)
    path = create_run(runs_root, "done", default_config(), status=initial_status("completed", 30))
    (path / "adapter").mkdir()
    app = open_page("done")
    assert next(box for box in app.selectbox if box.key == "try_set").value == "lab"
    app.selectbox(key="try_prompt").select("swedish").run()
    assert any(
        shown(c.value) == "Translate this sentence to Swedish: The coffee is too hot to drink."
        for c in app.caption
    )

    def verdict(answer: str) -> list[str]:
        app.text_area(key="try_answer").input(answer)
        button(app, "Check the answer").click().run()
        assert not app.exception, app.exception
        return [
            shown(m.value)
            for m in app.markdown
            if m.value.startswith(("**✅", "**❌", "**⚖️", "✅", "❌", "⚖️"))
        ]

    assert verdict("Kaffe är för varm för att drinka.") == [
        "**❌ failed**",
        "❌ translation: contains 'kaffe är', 'för varm', 'drinka', listed as wrong  \n"
        "✅ leakage: no template or prompt text",
    ]
    judged = verdict("Kaffet är på tok för varmt för att dricka.")
    assert judged[0] == "**⚖️ needs a judge**" and judged[1].startswith(
        "⚖️ translation: 'kaffet är på tok för varmt för att dricka'"
    )
    leaked = verdict(
        "user\n\nTranslate this sentence to Swedish: The coffee is too hot to drink.assistant\n\nKaffet är för hett att dricka."
    )
    assert leaked[0] == "**❌ failed**" and "✅ translation: matches the accepted translation" in leaked[1]
    assert "❌ leakage: role name 'user' at line 1; the prompt is echoed" in leaked[1]


def test_try_an_answer_keeps_working_when_the_picked_set_lacks_the_picked_prompt(runs_root):
    """The prompt remembered from the lab's set ("swedish") is not in a set picked next: the box
    offers that set's first prompt instead of breaking the page."""
    import_seed_runs(runs_root)
    save_prompt_set(
        runs_root,
        "mine",
        json.dumps({"name": "mine", "prompts": [{"id": "hi", "prompt": "Say hi.", "checks": []}]}),
    )
    path = create_run(runs_root, "done", default_config(), status=initial_status("completed", 30))
    (path / "adapter").mkdir()
    app = open_page("done")
    app.selectbox(key="try_prompt").select("swedish").run()
    app.selectbox(key="try_set").select("mine").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="try_prompt").value == "hi"
    assert any(shown(c.value) == "Say hi." for c in app.caption)
