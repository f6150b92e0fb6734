"""The Train page (pages/1_Train.py) through Streamlit's AppTest: the new-run form, its checks,
the command it shows, `Train?from=RUN`, the queue, and Start, which opens the new run's page.

The training jobs are real subprocesses of the tiny Llama started by the page; the test reruns the
Run page as its live view's timer would, and reads what it shows.
"""

import re
import time

import pytest
from conftest import app_at, charts, follow, heavy_modules_after_rendering, shown
from streamlit.testing.v1 import AppTest

from core.jobs.lifecycle import job_view
from core.store.files import read_json_object
from core.store.runs import create_run, initial_status
from core.store.seed import SEED_MARKER
from core.train.presets import LAB_1B, get_preset

TRAIN, RUN = "pages/1_Train.py", "pages/2_Run.py"


@pytest.fixture
def root(runs_root):
    """A runs root without the lab's runs (seeded once, then deleted)."""
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    return runs_root


def created(root) -> list[str]:
    """The run folders in the runs root."""
    return sorted(path.name for path in root.iterdir() if path.name != SEED_MARKER) if root.exists() else []


def open_page(query_params: dict | None = None) -> AppTest:
    app = app_at(TRAIN, query_params, timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def rerun(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, app.exception
    return app


def widget(app: AppTest, field: str):
    return app.session_state[f"train_field_{field}"]


def set_field(app: AppTest, kind: str, field: str, value) -> None:
    getattr(app, kind)(key=f"train_field_{field}").set_value(value)


def button(app: AppTest, label: str):
    return next(b for b in app.button if b.label.startswith(label))


def error_under(app: AppTest, key: str) -> str | None:
    """The error shown right under the widget with `key` (the next element in its column), if any."""

    def search(block):
        children = [block.children[index] for index in sorted(block.children)]
        for position, child in enumerate(children):
            if getattr(child, "key", None) == key:
                following = children[position + 1] if position + 1 < len(children) else None
                return shown(following.value) if getattr(following, "type", None) == "error" else None
            if hasattr(child, "children"):
                found = search(child)
                if found is not ...:
                    return found
        return ...

    found = search(app.main)
    assert found is not ..., f"no widget with key {key}"
    return found


def heading(app: AppTest) -> str:
    return shown(next(m.value for m in app.markdown if m.value.startswith("### ")))


def rerun_until(app: AppTest, condition, timeout: float = 120.0) -> None:
    """Rerun the page (as its live view's timer does) until `condition(app)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        rerun(app)
        if condition(app):
            return
        assert time.monotonic() < deadline, [m.value for m in app.markdown][:3]
        time.sleep(0.5)


def test_a_preset_fills_the_form_and_shows_what_will_run(root):
    app = open_page()
    assert app.title[0].value == "Train"
    assert app.selectbox(key="train_preset").value == "cpu_smoke"  # no GPU here
    assert widget(app, "base_model") == "tiny-llama"
    app.selectbox(key="train_preset").select("t2_model_centric").run()
    assert (widget(app, "base_model"), widget(app, "lora_r"), widget(app, "lora_alpha")) == (LAB_1B, 64, 64)
    assert widget(app, "split") == "train[:10000]" and widget(app, "max_steps") == 600
    assert app.text_input(key="train_run_name").value == "model_centric_1B_r64_10k_600steps"
    assert (
        "python -m core train model_centric_1B_r64_10k_600steps --preset t2_model_centric"
        in app.code[0].value
    )
    assert any("cannot run here" in shown(w.value) and "load_in_4bit" in shown(w.value) for w in app.warning)
    estimate = next(m for m in app.metric if m.label.startswith("Peak GPU memory"))
    assert estimate.value == "≈ 3.0 GB"  # the lab measured 2.96 GB for this run on a T4

    set_field(app, "number_input", "lora_r", 32)
    app.run()
    assert app.text_input(key="train_run_name").value == "model_centric_1B_r32_10k_600steps"
    assert "--set lora_r=32" in app.code[0].value


def test_invalid_input_shows_errors_next_to_fields_and_creates_nothing(root):
    app = open_page()
    set_field(app, "text_input", "split", "train[:abc]")
    set_field(app, "text_input", "dataset", "data/missing.jsonl")
    app.text_input(key="train_run_name").set_value("bad name!")
    app.run()
    assert "not a split" in error_under(app, "train_field_split")
    assert "no such file: data/missing.jsonl" in error_under(app, "train_field_dataset")
    assert "Invalid run name 'bad name!'" in error_under(app, "train_run_name")
    assert not app.code  # no command for a config that cannot run
    button(app, "Start training").click().run()
    assert "Fix the problems marked above; nothing was created." in [e.value for e in app.error]
    assert app.title[0].value == "Train" and created(root) == []


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("lora_r", 0, "must be from 1 to 1024 (got 0)"),
        ("max_steps", 999999999, "must be from 1 to 1000000 (got 999999999)"),
        ("learning_rate", 0.0, "must be above 0 to 1 (got 0)"),
    ],
)
def test_out_of_range_numbers_are_refused_under_their_field_and_nothing_starts(root, field, value, problem):
    """The number fields take whatever is typed: the app's own check refuses it, under the field."""
    app = open_page()
    assert app.code and error_under(app, f"train_field_{field}") is None
    set_field(app, "number_input", field, value)
    rerun(app)
    assert widget(app, field) == value  # the widget took it: no bound of its own
    assert error_under(app, f"train_field_{field}") == problem
    assert not app.code and "The command appears when every field is valid." in [c.value for c in app.caption]
    assert not any(m.label == "Device" for m in app.metric)
    button(app, "Start training").click()
    rerun(app)
    assert "Fix the problems marked above; nothing was created." in [e.value for e in app.error]
    assert app.title[0].value == "Train" and created(root) == []


def test_start_runs_the_job_and_opens_the_new_runs_page_which_follows_it_to_completion(root, tiny_model):
    app = open_page()
    set_field(app, "number_input", "max_steps", 12)
    set_field(app, "number_input", "warmup_steps", 0)
    rerun(app)
    name = app.text_input(key="train_run_name").value
    assert app.code[0].value.startswith(f"python -m core train {name} --preset cpu_smoke")
    button(app, "Start training").click()
    rerun(app)
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value == "Run" and app.query_params == {"run": name}  # st.switch_page to Run?run=NAME
    assert heading(app).endswith(f" · {name}") and app.selectbox(key="run_page_pick").value == name
    assert created(root) == [name] and job_view(root / name, "train").pid is not None

    app.switch_page(
        RUN
    )  # AppTest reruns the page it was last switched to; the browser shows the Run page now
    rerun_until(app, lambda a: "completed" in heading(a))
    assert heading(app) == f"### ✅ completed · {name}"
    assert re.fullmatch(r"step 12/12 · \d+\.\d\d s/step", app.get("progress")[0].proto.text)
    loss = next(m for m in app.metric if m.label == "Loss")
    metrics = read_json_object(root / name / "metrics.json")
    assert float(loss.value) == round(metrics["final_loss"], 4)
    chart = charts(app)["run_loss_chart"]
    assert [trace["name"] for trace in chart["data"]] == ["loss", "smoothed (0.60)"]
    assert chart["data"][0]["y"][-1] == pytest.approx(metrics["final_loss"])
    assert not [b for b in app.button if b.label in ("Stop", "Stopping…") or b.label.startswith("Resume")]


def test_the_form_opened_from_a_runs_page_holds_that_runs_settings(root):
    create_run(
        root,
        "t2_try",
        {**get_preset("t2_model_centric").config(), "lora_r": 128, "note": "wider"},
        status=initial_status("completed", 600),
    )
    app = app_at(RUN, {"run": "t2_try"})
    rerun(app)
    follow(app, "New run from this config")
    assert app.title[0].value == "Train" and app.query_params == {"from": "t2_try"}
    assert app.selectbox(key="train_preset").value == "t2_model_centric"
    assert (widget(app, "lora_r"), widget(app, "note"), widget(app, "split")) == (
        128,
        "wider",
        "train[:10000]",
    )
    assert app.text_input(key="train_run_name").value == "model_centric_1B_r128_10k_600steps"
    assert "--preset t2_model_centric --set lora_r=128 --set note=wider" in app.code[0].value

    set_field(app, "number_input", "lora_r", 96)  # edits stay: the form is filled once per source run
    rerun(app)
    assert widget(app, "lora_r") == 96 and "--set lora_r=96" in app.code[0].value


def test_a_from_run_that_does_not_exist_is_said_and_the_preset_is_used(root):
    app = open_page({"from": "gone"})
    assert any("Cannot start from run 'gone'" in shown(w.value) for w in app.warning)
    assert (
        app.selectbox(key="train_preset").value == "cpu_smoke" and widget(app, "base_model") == "tiny-llama"
    )


def test_the_form_survives_a_look_at_a_run(root):
    create_run(root, "other", get_preset("cpu_smoke").config(), status=initial_status("completed", 30))
    app = open_page()
    set_field(app, "number_input", "lora_r", 32)
    app.text_input(key="train_run_name").set_value("my_own_name")
    rerun(app)
    app.query_params = {"run": "other"}
    app.switch_page(RUN)
    rerun(app)
    assert heading(app).endswith("other")
    app.query_params = {}
    app.switch_page(TRAIN)
    rerun(app)
    assert widget(app, "lora_r") == 32 and app.text_input(key="train_run_name").value == "my_own_name"


def test_the_queue_lists_queued_and_running_jobs_with_links_to_their_pages(root):
    create_run(root, "done", get_preset("cpu_smoke").config(), status=initial_status("completed", 30))
    create_run(root, "waiting", get_preset("cpu_smoke").config(), status=initial_status("queued", 30))
    create_run(
        root, "busy", get_preset("cpu_smoke").config(), status={**initial_status("running", 30), "step": 7}
    )
    app = open_page()
    assert "Queue (2)" in [header.value for header in app.subheader]
    links = {link.proto.label: link.proto for link in app.get("page_link")}
    assert set(links) == {"waiting", "busy"}
    captions = [shown(caption.value) for caption in app.caption]
    assert "⏳ queued · step 0/30" in captions and "🔄 running · step 7/30" in captions
    assert {(link.page, link.query_string) for link in links.values()} == {
        ("Run", "run=waiting"),
        ("Run", "run=busy"),
    }
    follow(app, "waiting")
    assert heading(app) == "### ⏳ queued · waiting"
    assert "Queued but not started." in [info.value for info in app.info]
    assert button(app, "Start").label == "Start"


def test_an_empty_queue_says_so(root):
    app = open_page()
    assert "Queue (0)" in [header.value for header in app.subheader]
    assert any(caption.value.startswith("No training job is queued or running") for caption in app.caption)
    assert not app.get("page_link")


def test_the_page_imports_no_training_or_inference_library(root):
    create_run(
        root, "t2_try", get_preset("t2_model_centric").config(), status=initial_status("completed", 600)
    )
    assert heavy_modules_after_rendering(TRAIN) == []
    assert heavy_modules_after_rendering(TRAIN, {"from": "t2_try"}) == []


def test_a_run_from_elsewhere_fills_only_the_values_the_form_can_take(runs_root):
    """Train?from=RUN over a config.json with values of the wrong kind: those fields keep their defaults
    and the page says which (the widgets would fail on them)."""
    runs_root.mkdir()
    odd = create_run(
        runs_root,
        "odd",
        {**get_preset("cpu_smoke").config(), "load_in_4bit": "yes", "note": 5, "max_steps": [1]},
    )
    app = app_at(TRAIN, {"from": odd.name})
    rerun(app)
    assert any("load_in_4bit, max_steps, note cannot be used" in w.value for w in app.warning), app.warning
    assert widget(app, "load_in_4bit") is True and widget(app, "max_steps") == 60  # the defaults
    assert widget(app, "lora_r") == 16 and widget(app, "base_model") == "tiny-llama"  # the run's own


def test_keep_all_checkpoints_can_be_chosen_by_clearing_the_field(runs_root):
    app = open_page()
    set_field(app, "number_input", "save_total_limit", None)
    rerun(app)
    assert widget(app, "save_total_limit") is None and "save_total_limit=none" in app.code[0].value


def test_a_cleared_number_field_is_required(runs_root):
    app = open_page()
    set_field(app, "number_input", "max_steps", None)
    rerun(app)
    assert error_under(app, "train_field_max_steps") == "is required"
    button(app, "Start training").click()
    rerun(app)
    assert "Fix the problems marked above; nothing was created." in [e.value for e in app.error]
