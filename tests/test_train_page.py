"""The Train page through Streamlit's AppTest, starting real training jobs of the tiny Llama.

The jobs are real subprocesses started by the page; the test reruns the page as the live
view's timer would, and reads what it shows.
"""

import json
import re
import time

import pytest
from conftest import PROJECT_DIR, charts, heavy_modules_after_rendering, run_core
from streamlit.testing.v1 import AppTest

from core.jobs.lifecycle import job_view
from core.store.files import read_json_object
from core.store.runs import create_run, initial_status
from core.train.presets import LAB_1B, get_preset


def smoke_config() -> dict:
    return {**get_preset("cpu_smoke").config(), "warmup_steps": 0}


def open_page() -> AppTest:
    app = AppTest.from_file(str(PROJECT_DIR / "pages" / "train.py"), default_timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def widget(app: AppTest, field: str):
    return app.session_state[f"train_field_{field}"]


def set_field(app: AppTest, kind: str, field: str, value) -> None:
    getattr(app, kind)(key=f"train_field_{field}").set_value(value)


def button(app: AppTest, label: str):
    return next(b for b in app.button if b.label.startswith(label))


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


def heading(app: AppTest) -> str:
    return next(m.value for m in app.markdown if m.value.startswith("### "))


def start_smoke_run(app: AppTest, max_steps: int) -> str:
    set_field(app, "number_input", "max_steps", max_steps)
    set_field(app, "number_input", "warmup_steps", 0)
    app.run()
    name = app.text_input(key="train_run_name").value
    button(app, "Start training").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert app.radio(key="train_view").value == "Runs"
    return name


def test_a_preset_fills_the_form_and_shows_what_will_run(runs_root):
    app = open_page()
    assert app.selectbox(key="train_preset").value == "cpu_smoke"  # no GPU here
    assert widget(app, "base_model") == "tiny-llama"
    app.selectbox(key="train_preset").select("t2_model_centric").run()
    assert (widget(app, "base_model"), widget(app, "lora_r"), widget(app, "lora_alpha")) == (LAB_1B, 64, 64)
    assert widget(app, "split") == "train[:10000]" and widget(app, "max_steps") == 600
    assert app.text_input(key="train_run_name").value == "model_centric_1B_r64_10k_600steps"
    assert "python -m core train model_centric_1B_r64_10k_600steps --preset t2_model_centric" in app.code[0].value
    assert any("cannot run here" in w.value and "load_in_4bit" in w.value for w in app.warning)
    estimate = next(m for m in app.metric if m.label.startswith("Peak GPU memory"))
    assert estimate.value == "≈ 3.0 GB"  # the lab measured 2.96 GB for this run on a T4

    set_field(app, "number_input", "lora_r", 32)
    app.run()
    assert app.text_input(key="train_run_name").value == "model_centric_1B_r32_10k_600steps"
    assert "--set lora_r=32" in app.code[0].value


def test_invalid_input_shows_errors_next_to_fields_and_creates_nothing(runs_root):
    app = open_page()
    set_field(app, "text_input", "split", "train[:abc]")
    set_field(app, "text_input", "dataset", "data/missing.jsonl")
    app.text_input(key="train_run_name").set_value("bad name!")
    app.run()
    errors = [e.value for e in app.error]
    assert any("not a split" in e for e in errors) and any("no such file: data/missing.jsonl" in e for e in errors)
    assert any("Invalid run name 'bad name!'" in e for e in errors)
    button(app, "Start training").click().run()
    assert "Fix the problems marked above; nothing was created." in [e.value for e in app.error]
    assert not runs_root.exists() or not any(runs_root.iterdir())


def test_a_cpu_smoke_run_starts_as_a_job_and_the_page_follows_it_to_completion(runs_root, tiny_model):
    app = open_page()
    name = start_smoke_run(app, max_steps=12)
    assert job_view(runs_root / name, "train").pid is not None
    rerun_until(app, lambda a: "completed" in heading(a))
    assert heading(app) == f"### ✅ {name} · completed"
    assert re.fullmatch(r"step 12/12 · \d+\.\d\d s/step", app.get("progress")[0].proto.text)
    loss = next(m for m in app.metric if m.label == "Loss")
    events = read_json_object(runs_root / name / "metrics.json")
    assert float(loss.value) == round(events["final_loss"], 4)
    chart = charts(app)["train_loss_chart"]
    assert [trace["name"] for trace in chart["data"]] == ["loss", "smoothed (0.60)"]
    assert chart["data"][0]["y"][-1] == pytest.approx(events["final_loss"])
    assert not [b for b in app.button if b.label in ("Stop",) or b.label.startswith("Resume")]


def test_stop_ends_a_running_job_stopped_and_resume_continues_it(runs_root, tiny_model):
    app = open_page()
    set_field(app, "number_input", "save_steps", 1000)
    name = start_smoke_run(app, max_steps=45)
    rerun_until(app, lambda a: (read_json_object(runs_root / name / "status.json").get("step") or 0) >= 3)
    button(app, "Stop").click().run()
    rerun_until(app, lambda a: "stopped" in heading(a), timeout=60)
    stopped_at = read_json_object(runs_root / name / "status.json")["step"]
    assert button(app, "Resume from").label == f"Resume from checkpoint-{stopped_at}"

    button(app, "Resume from").click().run()
    rerun_until(app, lambda a: "completed" in heading(a))
    status = read_json_object(runs_root / name / "status.json")
    assert (status["step"], status["resumes"]) == (45, 1)


def test_delete_asks_first_and_never_touches_a_running_job(runs_root, tiny_model):
    app = open_page()
    name = start_smoke_run(app, max_steps=400)
    rerun_until(app, lambda a: "running" in heading(a))
    assert not [b for b in app.button if b.label == "Delete…"]  # not while it runs
    button(app, "Stop").click().run()
    rerun_until(app, lambda a: "stopped" in heading(a), timeout=60)

    button(app, "Delete…").click().run()
    assert any(f"Delete {name}" in w.value for w in app.warning)
    button(app, "Cancel").click().run()
    assert (runs_root / name).is_dir()
    button(app, "Delete…").click().run()
    button(app, f"Yes, delete {name}").click().run()
    assert not (runs_root / name).exists()
    assert any("No runs trained here yet" in i.value for i in app.info)


def test_a_completed_run_is_evaluated_from_its_view_as_a_job(runs_root, tiny_model):
    done = run_core("train", "evalme", "--preset", "cpu_smoke", "--set", "max_steps=4", "--set", "warmup_steps=0",
                    runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    app = open_page()
    app.radio(key="train_view").set_value("Runs").run()
    assert [m.value for m in app.markdown if m.value.startswith("####")] == ["#### Evaluate", "#### Export to GGUF"]
    app.number_input(key="eval_max_new_tokens").set_value(8).run()
    button(app, "Evaluate").click().run()
    assert not app.error, [e.value for e in app.error]
    rerun_until(app, lambda a: read_json_object(runs_root / "evalme" / "jobs" / "eval.json")["state"] == "completed")
    app.run()
    table = app.dataframe[-1].value
    assert list(table["Variant"]) == ["adapter"] and table["Passed all checks"][0].endswith("/10")
    assert any(c.value.startswith("Last evaluation: ✅ completed") for c in app.caption)
    rows = [json.loads(line) for line in (runs_root / "evalme" / "eval" / "adapter.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(row["max_new_tokens"] == 8 for row in rows)


def test_export_refuses_a_bad_hub_repo_before_starting_anything(runs_root, tiny_model, monkeypatch):
    done = run_core("train", "exportme", "--preset", "cpu_smoke", "--set", "max_steps=2", "--set", "warmup_steps=0",
                    runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    monkeypatch.delenv("HF_TOKEN", raising=False)
    app = open_page()
    app.radio(key="train_view").set_value("Runs").run()
    app.text_input(key="export_repo").input("not a repo").run()
    button(app, "Export").click().run()
    assert any("invalid repo id 'not a repo'" in e.value for e in app.error)
    app.text_input(key="export_repo").input("someone/tiny").run()
    button(app, "Export").click().run()
    assert any("no Hugging Face token" in e.value for e in app.error)
    assert not (runs_root / "exportme" / "jobs" / "export.json").exists()


def test_a_completed_run_is_exported_from_its_view_as_a_job(runs_root, tiny_model, converter_dir, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(converter_dir))
    done = run_core("train", "shipme", "--preset", "cpu_smoke", "--set", "max_steps=2", "--set", "warmup_steps=0",
                    runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    app = open_page()
    app.radio(key="train_view").set_value("Runs").run()
    app.multiselect(key="export_quants").set_value(["f16"]).run()
    button(app, "Export").click().run()
    assert not app.error, [e.value for e in app.error]
    rerun_until(app, lambda a: read_json_object(runs_root / "shipme" / "jobs" / "export.json")["state"] == "completed")
    app.run()
    files = app.dataframe[-1].value
    assert list(files["File"]) == ["gguf/shipme-f16.gguf"] and files["Verification"][0].startswith("verified")
    assert (runs_root / "shipme" / "gguf" / "shipme-f16.gguf").is_file()
    assert "gguf:shipme-f16.gguf" in app.selectbox(key="eval_variant").options
    button(app, "Delete merged/").click().run()
    assert not (runs_root / "shipme" / "merged").exists()


def test_the_form_survives_a_look_at_the_runs(runs_root):
    app = open_page()
    set_field(app, "number_input", "lora_r", 32)
    app.text_input(key="train_run_name").set_value("my_own_name")
    app.run()
    app.radio(key="train_view").set_value("Runs").run()
    app.radio(key="train_view").set_value("New run").run()
    assert widget(app, "lora_r") == 32 and app.text_input(key="train_run_name").value == "my_own_name"


def test_odd_run_folders_show_without_breaking_the_page_and_a_broken_one_can_be_deleted(runs_root):
    odd = create_run(runs_root, "odd", smoke_config(), status={**initial_status("stopped"), "step": "x",
                                                                "max_steps": "many", "training_s": "long"})
    (odd / "events.jsonl").write_text('{"loss": "high"}\n{"step": 2, "loss": "nan", "memory_gb": "lots"}\n'
                                      '{"step": 3, "loss": 6.5, "elapsed_s": 1.5}\n{"torn')
    broken = create_run(runs_root, "broken", smoke_config())
    (broken / "status.json").write_text("{not json")
    app = open_page()
    app.radio(key="train_view").set_value("Runs").run()
    assert heading(app).endswith("odd · stopped")
    assert next(m for m in app.metric if m.label == "Loss").value == "6.5000"
    app.selectbox(key="train_selected").select("broken").run()
    assert not app.exception
    assert any("This run folder is broken" in e.value for e in app.error)
    button(app, "Delete…").click().run()
    button(app, "Yes, delete broken").click().run()
    assert not broken.exists() and odd.exists()


def test_the_page_and_a_completed_runs_view_import_no_training_or_inference_library(runs_root, tiny_model):
    done = run_core("train", "light", "--preset", "cpu_smoke", "--set", "max_steps=2", "--set", "warmup_steps=0",
                    runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    assert heavy_modules_after_rendering("pages/train.py") == []
    assert heavy_modules_after_rendering("pages/train.py", {"train_view": "Runs"}) == []


def test_a_runs_config_starts_a_new_run_form(runs_root):
    create_run(runs_root, "t2_try", {**get_preset("t2_model_centric").config(), "lora_r": 128, "note": "wider"},
               status=initial_status("completed", 600))
    app = open_page()
    app.radio(key="train_view").set_value("Runs").run()
    button(app, "New run from this config").click().run()
    assert app.radio(key="train_view").value == "New run"
    assert app.selectbox(key="train_preset").value == "t2_model_centric"
    assert (widget(app, "lora_r"), widget(app, "note"), widget(app, "split")) == (128, "wider", "train[:10000]")
    assert app.text_input(key="train_run_name").value == "model_centric_1B_r128_10k_600steps"
    assert "--preset t2_model_centric --set lora_r=128 --set note=wider" in app.code[0].value
