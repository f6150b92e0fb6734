"""Hugging Face Jobs on the pages, through the stand-in of the Hub's Jobs and bucket API of
tests/test_hf_jobs.py (a local process with its volumes as local folders): the Train page
offers the GPUs with their price and the run's cost and launches the run; the Run page shows
the job and offers no second start."""

import pytest
from conftest import app_at, rerun, shown
from test_hf_jobs import TOKEN, StandInHub, hub  # noqa: F401  (hub: the stand-in, a fixture)

import ui.hf_jobs
from core.remote import dashboard
from core.remote.stores import open_remote
from core.store.runs import read_run_folder


@pytest.fixture
def jobs_configured(hub, runs_root, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PEFT_RUNS_REMOTE", "hf://buckets/lab/runs")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(ui.hf_jobs, "_api", lambda: hub)
    monkeypatch.setattr(dashboard, "open_remote", lambda spec, token: open_remote(spec, api=hub, token=token))
    dashboard._syncs.clear()
    ui.hf_jobs._offered.clear()
    ui.hf_jobs._report.clear()
    yield hub
    dashboard._syncs.clear()


def test_the_train_page_launches_a_run_on_hf_jobs_and_its_page_shows_the_job(jobs_configured, runs_root):
    app = rerun(app_at("pages/1_Train.py"))
    assert "Or train on Hugging Face Jobs" in [h.value for h in app.subheader]
    gpu = app.selectbox(key="train_hf_flavor")
    assert [shown(option) for option in gpu.options][:2] == [
        "T4 small · $0.40/hour",
        "T4 medium · $0.60/hour",
    ]
    name = app.text_input(key="train_run_name").value
    next(b for b in app.button if b.label == "Launch on Hugging Face Jobs").click()
    rerun(app)
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value == "Run" and app.query_params == {"run": name}
    assert read_run_folder(runs_root / name).state == "queued" and list(jobs_configured.jobs) == ["job-0"]
    app.switch_page("pages/2_Run.py")
    rerun(app)
    job = " ".join(shown(m.value) for m in app.markdown)
    assert "**Hugging Face job** `job-0` on t4-small: RUNNING" in job
    assert "Start" not in [b.label for b in app.button]  # launched: never a second start here


def test_the_cost_of_a_lab_run_shows_beside_a_t4(jobs_configured):
    app = rerun(app_at("pages/1_Train.py"))
    app.selectbox(key="train_preset").set_value("t1_baseline")
    rerun(app)
    options = [shown(option) for option in app.selectbox(key="train_hf_flavor").options]
    assert options[0].startswith("T4 small · $0.40/hour · this run ≈ $0.3")
    assert "this run" not in options[-1]  # an A10G was never measured: its price only


def test_a_job_that_ended_without_saying_so_leaves_a_run_that_can_be_deleted(jobs_configured, runs_root):
    from core.remote.hf_jobs import launch
    from core.store.runs import create_run, initial_status
    from core.train.config import parse_config
    from core.train.presets import get_preset

    config = parse_config({**get_preset("cpu_smoke").config(), "max_steps": 100_000})
    create_run(runs_root, "gone", config.to_dict(), status=initial_status("queued", 100_000))
    record = launch(runs_root, "gone", config, "hf://buckets/lab/runs", "t4-small", jobs_configured, TOKEN)
    jobs_configured.cancel_job(job_id=record["job_id"])  # cancelled before it recorded anything
    app = rerun(app_at("pages/2_Run.py", {"run": "gone"}))
    assert any("ended (CANCELED) without recording its end here" in shown(w.value) for w in app.warning)
    assert "Delete…" in [b.label for b in app.button]  # and Start: it may be trained here instead
