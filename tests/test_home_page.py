"""Home (the entry point, Home.py) through Streamlit's AppTest: seed runs, an empty root, a broken
run, links to each run's page and dashes for missing values."""

import json
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import streamlit as st
from conftest import app_at, seed_run_names, shown
from streamlit.testing.v1 import AppTest

from core.machine.devices import Gpu
from core.store.runs import create_run, initial_status
from core.store.seed import SEED_MARKER
from ui import lookups


@pytest.fixture(autouse=True)
def gpus(monkeypatch):
    """The GPUs the page sees: none by default (none exists here; tests may fake one)."""
    found: list[Gpu] = []
    monkeypatch.setattr(lookups, "detect_gpus", lambda: found)  # the pages ask through ui.lookups
    st.cache_data.clear()
    return found


@pytest.fixture
def empty_root(runs_root):
    """A runs root seeded earlier whose runs a person has all deleted."""
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    return runs_root


def run_home() -> AppTest:
    app = app_at("Home.py", timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def metric_values(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def linked_run(url: str) -> str:
    """The run a Run column link opens: `Run?run=NAME` is the Run page with NAME in its URL."""
    parts = urlsplit(url)
    assert parts.path == "Run", url
    return parse_qs(parts.query)["run"][0]


def runs_table(app: AppTest) -> pd.DataFrame:
    """The runs table indexed by run name (the Run column holds each run's link)."""
    table = app.dataframe[0].value
    return table.set_index(table["name"].map(linked_run))


def test_home_shows_the_seed_runs(runs_root):
    app = run_home()
    assert app.title[0].value == "PEFT Dashboard"
    table = runs_table(app)
    assert len(table) == 5 and set(table.index) == set(seed_run_names())
    row = table.loc["model_centric_1B_r64_10k_600steps"]
    assert (row["lora"], row["train_loss"], row["runtime_s"]) == ("64/64", 0.8806, 2649.69)
    assert (row["peak_memory_gb"], row["lora_memory_gb"]) == (2.955, 1.752)
    assert row["state"].endswith("completed")
    assert metric_values(app) == {"Runs": "5", "Completed": "5", "Active": "0", "Broken": "0"}
    system = " ".join(markdown.value for markdown in app.markdown)
    assert "**GPU:** no GPU" in system
    assert "Training stack" in system and "llama-cpp" in system and "GGUF converter" in system
    assert "Download experiments_log.csv" in [button.proto.label for button in app.get("download_button")]
    assert not app.warning and not app.error


def test_the_run_column_links_each_run_to_its_page(runs_root):
    app = run_home()
    frame = app.dataframe[0]
    assert list(frame.value["name"])[:1] == ["Run?run=baseline_1B_r16_10k_600steps"]
    column = json.loads(frame.proto.columns)["name"]
    assert column["label"] == "Run" and column["pinned"] is True
    assert column["type_config"] == {
        "type": "link",
        "display_text": "run=(.*)$",
    }  # shows the name, opens the page

    url = frame.value["name"][0]  # follow the link as the browser does: the Run page, with the URL's query
    page = app_at("pages/2_Run.py", {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()})
    page.run()
    assert not page.exception, page.exception
    assert shown(page.markdown[0].value) == "### ✅ completed · baseline_1B_r16_10k_600steps"


def test_missing_values_show_as_a_dash(empty_root):
    create_run(
        empty_root, "no_metrics", {"base_model": "tiny", "max_steps": 30}, status=initial_status("queued", 30)
    )
    app = run_home()
    frame = app.dataframe[0]
    assert frame.proto.placeholder == "—"  # what the table shows in an empty cell
    row = runs_table(app).loc["no_metrics"]
    missing = [
        "dataset",
        "lora",
        "train_loss",
        "runtime_s",
        "peak_memory_gb",
        "lora_memory_gb",
        "device",
        "note",
    ]
    assert all(pd.isna(row[column]) for column in missing), row.to_dict()  # empty, so the dash shows
    assert row["steps"] == "0/30" and row["state"].endswith("queued")
    shown = {str(value) for value in frame.value.to_numpy().ravel() if not pd.isna(value)}
    assert not shown & {"None", "nan", "NaN", "null", ""}, shown


def test_home_shows_a_gpu_when_there_is_one(runs_root, gpus):
    gpus.append(Gpu("Tesla T4", 15.0))
    app = run_home()
    assert "**GPU:** Tesla T4, 15 GB" in [markdown.value for markdown in app.markdown]


def test_home_with_an_empty_runs_root(empty_root):
    app = run_home()
    assert len(app.dataframe) == 0
    assert "No runs yet" in app.info[0].value
    assert not app.metric


@pytest.mark.parametrize("corrupt", ['{"state": "runn', "[]", "{}"])
def test_home_marks_a_broken_run_and_keeps_the_others(empty_root, corrupt):
    create_run(
        empty_root, "healthy", {"base_model": "tiny", "max_steps": 30}, status=initial_status("running", 30)
    )
    broken = empty_root / "half_written"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"base_model": "tiny"}))
    (broken / "status.json").write_text(corrupt)
    app = run_home()
    table = runs_table(app)
    assert table.loc["healthy", "state"].endswith("running")
    assert table.loc["half_written", "state"].endswith("broken")
    assert "status.json" in table.loc["half_written", "note"]
    assert metric_values(app)["Broken"] == "1"
    assert "half_written" in shown(app.warning[0].value)


def test_import_from_the_page_adds_runs_and_reports_bad_rows(empty_root):
    app = run_home()
    csv_bytes = (
        b"run_name,model_name,dataset_split,lora_r,max_steps,train_loss,train_runtime_sec,peak_gpu_GB,lora_gpu_GB\n"
        b"colab_r32,unsloth/Llama-3.2-1B-Instruct-bnb-4bit,train[:5000],32,300,0.95,1200.5,2.4,1.1\n"
        b"bad/row,m,train[:1],8,10,1,1,1,1\n"
    )
    app.file_uploader[0].set_value(("experiments_log.csv", csv_bytes, "text/csv")).run()
    app.button[0].click().run()
    assert not app.exception
    assert "imported 1 run(s), 1 row(s) skipped" in shown(app.success[0].value)
    assert "line 3" in app.warning[0].value and "slash" in app.warning[0].value
    table = runs_table(app)
    assert list(table.index) == ["colab_r32"]
    assert table.loc["colab_r32", "train_loss"] == 0.95


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary", b"a,b\n1,2\n"])
def test_import_of_a_foreign_file_shows_an_error_and_creates_nothing(empty_root, content):
    app = run_home()
    app.file_uploader[0].set_value(("other.csv", content, "text/csv")).run()
    app.button[0].click().run()
    assert not app.exception
    assert "other.csv was not imported" in shown(app.error[0].value)
    assert [path.name for path in empty_root.iterdir()] == [SEED_MARKER]


def test_home_navigates_to_every_page(runs_root):
    app = run_home()
    pages = {
        "pages/0_Data.py": "Data",
        "pages/1_Train.py": "Train",
        "pages/2_Run.py": "Run",
        "pages/3_Compare.py": "Compare runs",
        "pages/4_Study_cards.py": "Study cards",
        "pages/5_Sweeps.py": "Sweeps",
        "pages/6_Arena.py": "Arena",
    }
    for page, title in pages.items():
        app.switch_page(page).run()
        assert not app.exception, (page, app.exception)
        assert app.title[0].value == title
