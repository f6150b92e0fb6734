"""The dashboard as Streamlit Community Cloud runs it: requirements.txt alone in a fresh venv (no
torch, transformers, peft or trl), every page rendered there with Streamlit's AppTest by
tests/cloud_pages.py in one process, and that process's memory with the study-card model loaded.

The venv installs from pip's cache (the locally built llama-cpp-python wheel included): about a
minute, once per module. The Hub cannot be reached here, so the default card model (the lab's
Llama 3.2 1B GGUF) falls back to the bundled SmolLM2-135M, as it does on the cloud when offline.
The figures land in test-output/community-cloud/memory.json.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, seed_run_names, shown

from bench.compare import PROMPT_IDS

CLOUD_MEMORY_GB = 2.7  # the most Community Cloud gives an app (0.7-2.7 GB)
MEMORY_REPORT = PROJECT_DIR / "test-output" / "community-cloud" / "memory.json"
TRAINING_STACK = (
    "torch",
    "peft",
    "trl",
)  # transformers is there for the Data page's tokenizers, without torch


@pytest.fixture(scope="module")
def cloud_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding requirements.txt and nothing else."""
    venv = tmp_path_factory.mktemp("cloud") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (
        f"pip install -r requirements.txt failed:\n{(done.stdout + done.stderr)[-4000:]}"
    )
    return python


@pytest.fixture(scope="module")
def cloud_report(
    cloud_python: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path
) -> dict:
    """What tests/cloud_pages.py saw on every page in the cloud venv, and the app process's memory."""
    folder = tmp_path_factory.mktemp("cloud-app")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env.update(
        PEFT_RUNS_DIR=str(folder / "runs"),
        PEFT_CACHE_DIR=str(folder / "cache"),
        HF_HOME=str(folder / "huggingface"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        CLOUD_TOKENIZER=str(tiny_model_build),  # a model folder: its tokenizer loads without torch
    )
    report = folder / "report.json"
    done = subprocess.run(
        [str(cloud_python), "tests/cloud_pages.py", str(report)],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(report.read_text())


def assert_renders(page: dict) -> None:
    """No exception and no error on a rendered page."""
    assert not page["exceptions"], page["exceptions"]
    assert not page["errors"], page["errors"]


def test_the_cloud_venv_has_no_training_stack(cloud_python):
    done = subprocess.run(
        [str(cloud_python), "-c", "import torch"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr
    found = f"import importlib.util; print([m for m in {TRAINING_STACK!r} if importlib.util.find_spec(m)])"
    present = subprocess.run([str(cloud_python), "-c", found], capture_output=True, text=True, timeout=60)
    assert present.stdout.strip() == "[]", present.stdout + present.stderr


def test_home_lists_the_lab_runs(cloud_report):
    seen = cloud_report["pages"]["home"]  # Home.py, the entry point
    assert_renders(seen)
    assert seen["titles"] == ["PEFT Dashboard"]
    assert set(seen["tables"][0]["first_column"]) == {f"Run?run={name}" for name in seed_run_names()}  # links
    assert "Download experiments_log.csv" in seen["downloads"]


def test_train_says_where_training_runs(cloud_report):
    train = cloud_report["pages"]["train"]
    assert_renders(train)
    assert train["titles"] == ["Train"]
    assert any(
        info.startswith("Training is not available in this installation")
        and "requirements-train.txt" in info
        and "GPU" in info
        for info in train["infos"]
    ), train["infos"]
    commands = [code for code in train["code"] if code.startswith("python -m core train ")]
    assert len(commands) == 1 and commands[0].endswith("--preset t1_baseline"), train["code"]  # a GPU run
    assert train["buttons"]["Start training"] is True  # disabled
    assert train["links"] == []  # nothing in the queue


def test_the_run_page_shows_a_completed_run_and_what_needs_the_training_stack(cloud_report):
    run = cloud_report["pages"]["run"]  # Run?run=run_000: completed, with an adapter
    assert_renders(run)
    assert run["query"] == {"run": "run_000"} and run["choices"]["Run"] == "run_000"
    assert [shown(heading) for heading in run["headings"]] == [
        "### ✅ completed · run_000",
        "#### Evaluate",
        "#### Benchmarks",
        "#### Export to GGUF",
    ]
    assert "run_loss_chart" in run["charts"]
    assert any(
        info.startswith("The adapter and the base model need the training stack") for info in run["infos"]
    )
    assert any(info.startswith("Exporting needs the training stack here") for info in run["infos"])
    assert run["buttons"]["Export"] is True  # disabled
    assert ["New run from this config", "Train", "from=run_000"] in run["links"]
    assert ["Compare", "Compare", "runs=run_000"] in run["links"]


def test_compare_shows_curves_answers_and_the_report(cloud_report):
    compare = cloud_report["pages"]["compare"]
    assert_renders(compare)
    assert "curves" in compare["charts"]
    matrix = next(table for table in compare["tables"] if table["columns"][0] == "Prompt")
    assert matrix["columns"][1:] == ["run_000 · adapter", "run_001 · adapter"]
    assert matrix["first_column"] == list(PROMPT_IDS)
    assert {"Download the comparison (Markdown)", "Download the answers (CSV)"} <= set(compare["downloads"])
    assert set(compare["query"]["runs"].split(",")) == set(seed_run_names()) | {"run_000", "run_001"}
    assert compare["query"]["baseline"] == "baseline_1B_r16_10k_600steps"


def test_the_arena_says_adapters_need_the_training_stack(cloud_report):
    arena = cloud_report["pages"]["arena"]
    assert_renders(arena)
    assert arena["titles"] == ["Arena"]
    assert any(info.startswith("Adapters cannot answer here") for info in arena["infos"]), arena["infos"]


def test_the_sweeps_page_opens_without_a_sweep(cloud_report):
    sweeps = cloud_report["pages"]["sweeps"]
    assert_renders(sweeps)
    assert sweeps["titles"] == ["Sweeps"]


def test_the_data_page_measures_a_dataset_without_the_training_stack(cloud_report):
    opened, measured = cloud_report["pages"]["data"], cloud_report["pages"]["data_measured"]
    assert_renders(opened)
    assert opened["titles"] == ["Data"] and "Measure" in opened["buttons"]
    assert_renders(measured)
    assert set(measured["charts"]) == {"data_lengths", "data_turns", "data_sources", "data_scores"}
    assert measured["query"]["source"] == "data/sample_scored.jsonl"


def test_study_cards_make_a_deck_with_the_bundled_model(cloud_report):
    assert_renders(cloud_report["pages"]["study_cards"])
    deck = cloud_report["pages"]["study_cards_deck"]
    assert_renders(deck)
    assert deck["model"].endswith("(Hugging Face Hub)")  # the default choice, unreachable here
    assert any(
        "Could not fetch" in warning and "bundled model instead" in warning for warning in deck["warnings"]
    )
    assert len(deck["cards"]) == 3 and len(set(deck["cards"])) == 3
    assert deck["downloads"] == ["Download CSV for Anki", "Download Anki package (.apkg)"]


def test_memory_with_the_card_model_fits_the_cloud(cloud_report):
    figures = {
        "memory_mb": cloud_report["memory_mb"],
        "bundled_model": cloud_report["bundled_model"],
        "context_tokens": cloud_report["context_tokens"],
    }
    MEMORY_REPORT.parent.mkdir(parents=True, exist_ok=True)
    MEMORY_REPORT.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
    without, loaded = figures["memory_mb"]["without_model"], figures["memory_mb"]["with_model"]
    assert loaded["VmRSS"] > without["VmRSS"]  # the model is in this process
    assert loaded["VmHWM"] < CLOUD_MEMORY_GB * 1000
