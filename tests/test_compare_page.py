"""The Compare page (pages/3_Compare.py) through Streamlit's AppTest: seed runs only, runs with
curves and eval results, a broken run, more curves than the chart shows, picks and baseline in the
URL, the default baseline, and one real tiny training run.

Run folders are written directly in the run folder contract's format (config.json,
status.json, metrics.json, events.jsonl, eval/<variant>.jsonl, ratings.json), as the
training and eval jobs write them; one test trains a real run through the CLI.
"""

import csv
import io
import json
import math
import random

import pytest
import streamlit as st
from conftest import app_at, charts, follow, heavy_modules_after_rendering, run_core, shown
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from core.evaluate.ratings import answer_sha256
from core.store.files import (
    read_json_object,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from core.store.runs import EVENTS_FILE, create_run, initial_status
from core.store.seed import SEED_MARKER, import_seed_runs
from core.train.config import default_config
from core.train.presets import LAB_1B

PAGE = "pages/3_Compare.py"

SEED_NAMES = {
    "baseline_1B_r16_10k_600steps",
    "data_centric_1B_r64_30k_600steps",
    "exp3_1B_10k_600steps",
    "model2_3B_r64_30k_400steps",
    "model_centric_1B_r64_10k_600steps",
}


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()


@pytest.fixture
def downloads(monkeypatch):
    """Read what a download button offers. AppTest keeps those files in an in-memory media
    store it makes for each run and drops afterwards; this keeps a handle on the last one."""
    stores = []

    class RecordingStorage(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", RecordingStorage)

    def read(app: AppTest, label: str) -> str:
        button = next(b for b in app.get("download_button") if b.proto.label == label)
        return stores[-1].get_file(button.proto.url.rsplit("/", 1)[-1]).content.decode("utf-8")

    return read


def open_page(query_params: dict | None = None) -> AppTest:
    """The page as a link opens it: Home.py is the entry point, `query_params` the URL's query."""
    app = app_at(PAGE, query_params, timeout=60)
    app.run()
    assert not app.exception, app.exception
    return app


def rerun(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, app.exception
    return app


def widget(elements, label):
    return next(element for element in elements if element.label == label)


def rating_key(run: str, prompt_id: str, answer: str, variant: str = "adapter") -> str:
    """The key of the rating form of one answer on the page (it names the answer by its hash)."""
    return f"rating|{run}|{variant}|lab|{prompt_id}|{answer_sha256(answer)}"


def table(app: AppTest, first_column: str):
    return next(frame.value for frame in app.dataframe if frame.value.columns[0] == first_column)


# --- run folders as the jobs write them ---------------------------------------------------------


def training_events(steps, first_loss, last_loss, *, seconds_per_step, tokens_per_step, memory_gb, seed):
    """events.jsonl records of a run whose loss falls from first_loss towards last_loss, with noise."""
    rng = random.Random(seed)
    events = []
    for step in range(1, steps + 1):
        progress = (step - 1) / max(1, steps - 1)
        loss = last_loss + (first_loss - last_loss) * math.exp(-5 * progress) + rng.gauss(0, 0.04)
        events.append(
            {
                "step": step,
                "loss": round(loss, 4),
                "learning_rate": 2e-4 * min(1.0, step / 5) * (1 - progress),
                "grad_norm": round(rng.uniform(0.2, 1.5), 4),
                "epoch": round(step * 8 / 10000, 4),
                "elapsed_s": round(step * seconds_per_step, 3),
                "tokens_seen": step * tokens_per_step,
                "memory_gb": memory_gb,
            }
        )
    return events


def trained_run(root, name, *, config, events, device, peak, lora, device_memory=None):
    """A completed run folder with config, status, events and metrics as core.train.training writes them."""
    runtime = events[-1]["elapsed_s"]
    metrics = {
        "train_loss": round(sum(e["loss"] for e in events) / len(events), 4),
        "final_loss": events[-1]["loss"],
        "train_runtime_s": runtime,
        "steps": events[-1]["step"],
        "tokens_seen": events[-1]["tokens_seen"],
        "tokens_per_s": round(events[-1]["tokens_seen"] / runtime, 1),
        "peak_memory_gb": peak,
        "lora_memory_gb": lora,
        "memory_measure": "process_rss" if device == "cpu" else "cuda_reserved",
        "device": device,
        "device_memory_gb": device_memory,
    }
    status = {**initial_status("completed", config["max_steps"]), "step": config["max_steps"]}
    path = create_run(root, name, {**default_config(), **config}, status=status, metrics=metrics)
    write_jsonl_atomic(path / EVENTS_FILE, events)
    return path


PROMPTS = {
    "vpn": "Explain how a VPN works in one short paragraph.",
    "ml_differences": "List three differences between supervised and unsupervised learning.",
    "feedback_email": "Write a polite professional email requesting feedback on a job interview.",
    "swedish": "Translate this sentence to Swedish: The coffee is too hot to drink.",
}
CHECKS = {
    "vpn": ("paragraphs", "words"),
    "ml_differences": ("items",),
    "feedback_email": ("greeting", "sign_off"),
    "swedish": ("translation",),
}


def eval_rows(variant, answers, *, failing=None, latency=1.0):
    """eval/<variant>.jsonl rows in the fixed format; `failing` maps prompt ids to (check, detail)."""
    rows = []
    for index, (prompt_id, text) in enumerate(answers.items()):
        failed = (failing or {}).get(prompt_id)
        checks = [
            {
                "name": name,
                "passed": not (failed and failed[0] == name),
                "detail": failed[1] if failed and failed[0] == name else "ok",
            }
            for name in (*CHECKS[prompt_id], "leakage")
        ]
        rows.append(
            {
                "variant": variant,
                "prompt_set": "lab",
                "prompt_id": prompt_id,
                "prompt": PROMPTS[prompt_id],
                "answer": text,
                "checks": checks,
                "passed": all(c["passed"] for c in checks),
                "latency_s": round(latency + index * 0.3, 2),
                "new_tokens": 40 + index * 10,
                "max_new_tokens": 256,
                "model": f"base + {variant}",
                "created_at": "2026-11-28T15:00:00Z",
            }
        )
    return rows


def small_cpu_run(runs_root, name):
    """A runs root with no seed runs and one 5-step CPU run, trained as the job writes it."""
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    return trained_run(
        runs_root,
        name,
        config={"max_steps": 5},
        device="cpu",
        peak=0.5,
        lora=0.05,
        events=training_events(5, 3.0, 2.0, seconds_per_step=0.1, tokens_per_step=100, memory_gb=0.5, seed=5),
    )


def write_eval(path, variant, rows):
    (path / "eval").mkdir(exist_ok=True)
    write_jsonl_atomic(path / "eval" / f"{variant}.jsonl", rows)


GOOD = {
    "vpn": "A VPN sends your traffic through an encrypted tunnel to a server it trusts, so that networks in between "
    "see only scrambled data and websites see the server's address instead of yours.",
    "ml_differences": "1. Labels: supervised learning uses them.\n2. Goal: prediction versus structure.\n3. Evaluation: "
    "accuracy versus cluster quality.",
    "feedback_email": "Dear Ms. Lee,\n\nThank you for the interview. Could you share any feedback?\n\nBest regards,\nSam",
    "swedish": "Kaffet är för varmt för att dricka.",
}


@pytest.fixture
def lab_root(runs_root):
    """The seed runs, two GPU runs (1000 logged steps) and a CPU run, with answers and a rating."""
    import_seed_runs(runs_root)
    r16 = trained_run(
        runs_root,
        "t4_r16",
        config={"lora_r": 16, "lora_alpha": 16, "max_steps": 1000},
        events=training_events(
            1000, 2.1, 0.95, seconds_per_step=4.2, tokens_per_step=8000, memory_gb=3.1, seed=1
        ),
        device="Tesla T4",
        peak=3.75,
        lora=1.4,
        device_memory=15.0,
    )
    r64 = trained_run(
        runs_root,
        "t4_r64",
        config={"lora_r": 64, "lora_alpha": 64, "max_steps": 1000},
        events=training_events(
            1000, 2.1, 0.85, seconds_per_step=4.5, tokens_per_step=8000, memory_gb=3.4, seed=2
        ),
        device="Tesla T4",
        peak=4.5,
        lora=1.9,
        device_memory=15.0,
    )
    tiny = trained_run(
        runs_root,
        "cpu_tiny",
        config={
            "base_model": "tiny-llama",
            "lora_r": 8,
            "lora_alpha": 16,
            "max_steps": 60,
            "load_in_4bit": False,
            "backend": "hf",
        },
        events=training_events(
            60, 5.5, 3.0, seconds_per_step=0.08, tokens_per_step=300, memory_gb=0.5, seed=3
        ),
        device="cpu",
        peak=0.55,
        lora=0.06,
    )
    write_eval(
        r16,
        "adapter",
        eval_rows(
            "adapter",
            {**GOOD, "swedish": "Kaffe är varm."},
            failing={"swedish": ("translation", "similarity 0.52 < 0.85")},
            latency=1.6,
        ),
    )
    write_eval(
        r16,
        "base",
        eval_rows(
            "base",
            {**GOOD, "ml_differences": "1. a\n2. b\n3. c\n4. d"},
            failing={"ml_differences": ("items", "4 items, expected 3")},
        ),
    )
    write_eval(r64, "adapter", eval_rows("adapter", GOOD, latency=1.9))
    write_eval(
        tiny,
        "adapter",
        eval_rows(
            "adapter",
            {**GOOD, "vpn": "assistant\n\nVPN VPN"},
            failing={"vpn": ("words", "3 words, expected 20-150")},
            latency=0.1,
        ),
    )
    write_json_atomic(
        r64 / "ratings.json", {"adapter": {"swedish": {"rating": 4, "note": "natural Swedish"}}}
    )
    return runs_root


# --- tests ----------------------------------------------------------------------------------


def test_seed_runs_only(runs_root, downloads):
    app = open_page()  # seeds the runs root, as Home does
    assert set(widget(app.multiselect, "Runs").value) == SEED_NAMES
    assert widget(app.selectbox, "Baseline").value == "baseline_1B_r16_10k_600steps"
    assert not any(element.label == "x axis" for element in app.radio)  # no curves at all: no curve controls
    assert "No loss curve for" in app.info[0].value and all(name in app.info[0].value for name in SEED_NAMES)
    figures = charts(app)
    assert "curves" not in figures
    memory = figures["memory"]["data"]
    assert [trace["name"] for trace in memory] == ["Peak memory", "LoRA memory"] and len(memory[0]["x"]) == 5
    assert widget(app.radio, "Loss").value == "train_loss"  # the seed runs have no final loss
    assert sorted(figures["scatter"]["data"][0]["text"]) == sorted(SEED_NAMES - {"exp3_1B_10k_600steps"})
    assert figures["scatter"]["data"][0]["mode"] == "markers+text"  # few points: names beside them
    metrics = table(app, "Run").set_index("Run")
    t2 = metrics.loc["model_centric_1B_r64_10k_600steps"]
    assert (t2["Train loss (mean)"], t2["Δ Train loss (mean)"]) == (0.8806, "🟢 ▼ -0.0112 (-1.3%)")
    assert t2["Δ Peak memory (GB)"] == "🔴 ▲ +0.391 (+15.2%)" and t2["Memory measure"] == "GPU reserved"
    assert metrics.loc["baseline_1B_r16_10k_600steps", "Δ Runtime (s)"] == "baseline"
    diff = next(frame.value for frame in app.dataframe if frame.value.index.name == "Run")
    assert list(diff.columns) == ["base_model", "split", "lora_r", "lora_alpha", "max_steps"]
    assert "No evaluation results for the picked runs yet" in app.info[-1].value
    report = downloads(app, "Download the comparison (Markdown)")
    assert (
        report.startswith("# Run comparison")
        and "| model_centric_1B_r64_10k_600steps | GPU reserved | 0.8806 ▼" in report
    )
    assert not app.get("download_button")[1:]  # no answers, no answers CSV
    assert not app.warning and not app.error


def test_runs_with_curves_and_answers(lab_root, downloads):
    app = open_page()
    assert set(widget(app.multiselect, "Runs").value) == SEED_NAMES | {"t4_r16", "t4_r64", "cpu_tiny"}
    curves = {trace["name"]: trace for trace in charts(app)["curves"]["data"]}
    assert set(curves) == {"t4_r16", "t4_r64", "cpu_tiny"}
    assert all(len(trace["x"]) <= 500 for trace in curves.values()) and len(curves["cpu_tiny"]["x"]) == 60
    assert curves["t4_r16"]["x"][0] == 1 and curves["t4_r16"]["x"][-1] == 1000
    assert "No loss curve for" in app.info[0].value and "t4_r16" not in app.info[0].value

    widget(app.selectbox, "Baseline").set_value("t4_r16")
    widget(app.radio, "x axis").set_value("tokens_seen")
    widget(app.slider, "Smoothing").set_value(0.0)
    rerun(app)
    curves = {trace["name"]: trace for trace in charts(app)["curves"]["data"]}
    assert curves["t4_r16"]["x"][-1] == 8_000_000 and curves["t4_r16"]["line"]["width"] == 3
    events, _ = read_jsonl(lab_root / "cpu_tiny" / EVENTS_FILE)
    assert curves["cpu_tiny"]["y"] == [event["loss"] for event in events]  # unsmoothed, not downsampled

    memory = {trace["name"]: trace for trace in charts(app)["memory"]["data"]}
    peak = dict(zip(memory["Peak memory"]["x"], memory["Peak memory"]["text"]))
    assert peak["t4_r16"] == "25%" and peak["t4_r64"] == "30%" and peak["cpu_tiny"] == ""
    hatched = dict(zip(memory["Peak memory"]["x"], memory["Peak memory"]["marker"]["pattern"]["shape"]))
    assert hatched["cpu_tiny"] == "/" and hatched["t4_r16"] == ""
    assert any("cpu_tiny ran on a CPU" in caption.value and "RSS" in caption.value for caption in app.caption)

    metrics = table(app, "Run").set_index("Run")
    assert metrics.loc["t4_r64", "Δ Peak memory (GB)"] == "🔴 ▲ +0.750 (+20.0%)"
    assert metrics.loc["t4_r64", "Peak % of device"] == 30.0
    assert metrics.loc["cpu_tiny", "Δ Peak memory (GB)"] == "not comparable"
    assert metrics.loc["cpu_tiny", "Memory measure"] == "CPU RSS"
    r16, r64 = (read_json_object(lab_root / name / "metrics.json") for name in ("t4_r16", "t4_r64"))
    change = r64["final_loss"] - r16["final_loss"]
    mark, arrow = ("🔴", "▲") if change > 0 else ("🟢", "▼")
    assert (
        metrics.loc["t4_r64", "Δ Final loss"]
        == f"{mark} {arrow} {change:+.4f} ({100 * change / r16['final_loss']:+.1f}%)"
    )

    passes = next(frame.value for frame in app.dataframe if "Pass rate (%)" in frame.value.columns)
    assert passes.set_index(["Run", "Variant"])["Passed"].to_dict() == {
        ("t4_r16", "adapter"): 3,
        ("t4_r16", "base"): 3,
        ("t4_r64", "adapter"): 4,
        ("cpu_tiny", "adapter"): 3,
    }
    matrix = table(app, "Prompt").set_index("Prompt")
    assert list(matrix.index) == ["vpn", "ml_differences", "feedback_email", "swedish"]
    assert matrix.loc["swedish", "t4_r16 · adapter"] == "❌ translation · 2.5 s"
    assert matrix.loc["swedish", "t4_r64 · adapter"] == "✅ · 2.8 s"
    assert matrix.loc["vpn", "cpu_tiny · adapter"] == "❌ words · 0.1 s"

    columns = widget(app.multiselect, "Answer columns")
    columns.set_value([c for c in columns.value if c.run in ("t4_r16", "t4_r64") and c.variant == "adapter"])
    app.toggle[0].set_value(True)
    rerun(app)
    matrix = table(app, "Prompt")
    assert matrix.to_dict("records") == [
        {"Prompt": "swedish", "t4_r16 · adapter": "❌ translation · 2.5 s", "t4_r64 · adapter": "✅ · 2.8 s"}
    ]
    assert widget(app.selectbox, "Prompt").value == "swedish"
    assert [block.value for block in app.code] == ["Kaffe är varm.", "Kaffet är för varmt för att dricka."]
    r64_key, r16_key = (
        rating_key("t4_r64", "swedish", GOOD["swedish"]),
        rating_key("t4_r16", "swedish", "Kaffe är varm."),
    )
    assert (
        app.selectbox(key=f"{r64_key}:rating").value == 4
    )  # saved without the answer's hash: shown as before
    assert app.text_input(key=f"{r64_key}:note").value == "natural Swedish"

    app.selectbox(key=f"{r16_key}:rating").set_value(2)
    app.text_input(key=f"{r16_key}:note").input("wrong word order")
    next(button for button in app.button if button.key == f"{r16_key}:save").click()
    rerun(app)
    assert "Saved the rating of t4_r16 · adapter on swedish." in [shown(s.value) for s in app.success]
    stored = read_json_object(lab_root / "t4_r16" / "ratings.json")
    assert (
        stored["adapter"]["swedish"]["rating"] == 2
        and stored["adapter"]["swedish"]["note"] == "wrong word order"
    )
    answers = list(csv.DictReader(io.StringIO(downloads(app, "Download the answers (CSV)"))))
    rated = next(row for row in answers if row["run"] == "t4_r16" and row["prompt_id"] == "swedish")
    assert (rated["rating"], rated["note"], rated["passed"], rated["answer"]) == (
        "2",
        "wrong word order",
        "false",
        "Kaffe är varm.",
    )
    assert len(answers) == 8
    report = downloads(app, "Download the comparison (Markdown)")
    assert (
        "| t4_r16 | adapter | 3 | 0 | 4 | 75.0 |" in report
        and "| swedish | ❌ translation · 2.5 s | ✅ · 2.8 s |" in report
    )
    assert "baseline **t4_r16**" in report


def test_answers_without_a_prompt_set_are_shown(runs_root):
    """Eval rows without a prompt_set (written before it was recorded) still fill the matrix."""
    run = small_cpu_run(runs_root, "old_eval")
    rows = eval_rows("adapter", GOOD, failing={"swedish": ("translation", "similarity 0.5 < 0.85")})
    write_eval(run, "adapter", [{k: v for k, v in row.items() if k != "prompt_set"} for row in rows])
    app = open_page()
    assert "No answers to show." not in [info.value for info in app.info]
    matrix = table(app, "Prompt").set_index("Prompt")
    assert list(matrix.index) == list(GOOD)
    assert matrix.loc["swedish", "old_eval · adapter"] == "❌ translation · 1.9 s"
    assert widget(app.selectbox, "Prompt").value == "vpn" and [block.value for block in app.code] == [
        GOOD["vpn"]
    ]


def test_a_rating_is_not_shown_next_to_a_new_answer(lab_root, downloads):
    """Rate an answer, re-evaluate (a new answer to the same prompt): the new answer is unrated."""
    app = open_page()
    columns = widget(app.multiselect, "Answer columns")
    columns.set_value([c for c in columns.value if c.run == "t4_r16" and c.variant == "adapter"])
    widget(app.selectbox, "Prompt").set_value("swedish")
    rerun(app)
    old_key = rating_key("t4_r16", "swedish", "Kaffe är varm.")
    app.selectbox(key=f"{old_key}:rating").set_value(2)
    app.text_input(key=f"{old_key}:note").input("wrong word order")
    next(button for button in app.button if button.key == f"{old_key}:save").click()
    rerun(app)
    assert "Saved the rating of t4_r16 · adapter on swedish." in [shown(s.value) for s in app.success]

    write_eval(lab_root / "t4_r16", "adapter", eval_rows("adapter", GOOD, latency=1.6))  # evaluated again
    rerun(app)
    assert [block.value for block in app.code] == [GOOD["swedish"]]
    new_key = rating_key("t4_r16", "swedish", GOOD["swedish"])
    assert (
        app.selectbox(key=f"{new_key}:rating").value is None
        and app.text_input(key=f"{new_key}:note").value == ""
    )
    answers = list(csv.DictReader(io.StringIO(downloads(app, "Download the answers (CSV)"))))
    assert [
        (row["answer"], row["rating"], row["note"]) for row in answers if row["prompt_id"] == "swedish"
    ] == [(GOOD["swedish"], "", "")]
    stored = read_json_object(lab_root / "t4_r16" / "ratings.json")["adapter"]["swedish"]
    assert stored["rating"] == 2 and stored["answer_sha256"] == answer_sha256(
        "Kaffe är varm."
    )  # kept, not shown


def test_a_broken_run_is_listed_with_its_reason_and_the_rest_still_compares(lab_root):
    half = lab_root / "half_written"
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"base_model": "tiny-llama"}))
    (half / "status.json").write_text('{"state": "compl')
    (lab_root / "t4_r64" / "metrics.json").write_text("[]")
    with (lab_root / "cpu_tiny" / EVENTS_FILE).open("a") as handle:
        handle.write('not json\n{"step": 61, "lo')
    unreadable = trained_run(
        lab_root,
        "unreadable_events",
        config={"max_steps": 5},
        device="cpu",
        peak=0.5,
        lora=0.05,
        events=training_events(5, 3.0, 2.0, seconds_per_step=0.1, tokens_per_step=100, memory_gb=0.5, seed=4),
    )
    (unreadable / EVENTS_FILE).unlink()
    (unreadable / EVENTS_FILE).mkdir()  # stat works, reading fails (as root, a chmod would not stop it)
    app = open_page()
    warnings = [shown(warning.value) for warning in app.warning]
    assert any(
        w.startswith("**half_written** cannot be read") and "status.json is not valid JSON" in w
        for w in warnings
    )
    assert any(
        w.startswith("**t4_r64** cannot be read") and "metrics.json holds a list" in w for w in warnings
    )
    options = widget(app.multiselect, "Runs").options
    assert "half_written" not in options and "t4_r64" not in options and "t4_r16" in options
    assert set(trace["name"] for trace in charts(app)["curves"]["data"]) == {"t4_r16", "cpu_tiny"}
    assert "Unreadable lines skipped in events.jsonl: cpu_tiny (2)." in [
        caption.value for caption in app.caption
    ]
    assert "t4_r64" not in set(table(app, "Run")["Run"])
    assert any(
        w.startswith(
            "No loss curve for **unreadable_events**: events.jsonl cannot be read (not a regular file)"
        )
        for w in warnings
    )
    assert "unreadable_events" in set(table(app, "Run")["Run"])  # still in the tables


def test_with_more_runs_than_the_chart_shows_it_says_so_and_lets_you_choose(runs_root):
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    for index in range(12):
        trained_run(
            runs_root,
            f"sweep_lr{index:02d}",
            config={"learning_rate": 1e-4 * (index + 1), "max_steps": 50},
            events=training_events(
                50,
                2.0,
                1.0 - index * 0.02,
                seconds_per_step=1.0,
                tokens_per_step=500,
                memory_gb=3.0,
                seed=index,
            ),
            device="NVIDIA A100-SXM4-40GB",
            peak=5.0 + index * 0.1,
            lora=2.0,
            device_memory=40.0,
        )
    picked = sorted(path.name for path in runs_root.iterdir() if path.name.startswith("sweep_"))
    assert len(widget(open_page().multiselect, "Runs").value) == 10  # the 10 newest are picked at first
    app = open_page({"runs": ",".join(picked)})
    assert "12 picked runs have loss curves; the chart shows 10 of them" in app.info[0].value
    chosen = widget(app.multiselect, "Runs in the chart")
    assert len(chosen.value) == 10 and len(charts(app)["curves"]["data"]) == 10
    chosen.set_value(["sweep_lr11", "sweep_lr03"])
    rerun(app)
    assert {trace["name"] for trace in charts(app)["curves"]["data"]} == {"sweep_lr11", "sweep_lr03"}
    diff = next(frame.value for frame in app.dataframe if frame.value.index.name == "Run")
    assert list(diff.columns) == ["learning_rate"]


def test_a_real_tiny_training_run_is_drawn_from_its_own_events(runs_root, tiny_model):
    import_seed_runs(runs_root)
    done = run_core(
        "train", "tiny_real", "--preset", "cpu_smoke", "--set", "max_steps=6", runs_root=runs_root
    )
    assert done.returncode == 0, done.stderr
    app = open_page()
    events, _ = read_jsonl(runs_root / "tiny_real" / EVENTS_FILE)
    widget(app.slider, "Smoothing").set_value(0.0)
    rerun(app)
    curve = charts(app)["curves"]["data"][0]
    assert curve["name"] == "tiny_real" and curve["y"] == [event["loss"] for event in events]
    metrics = read_json_object(runs_root / "tiny_real" / "metrics.json")
    row = table(app, "Run").set_index("Run").loc["tiny_real"]
    assert row["Memory measure"] == "CPU RSS" and row["Final loss"] == metrics["final_loss"]
    assert row["Δ Peak memory (GB)"] == "not comparable"
    assert row["Δ Train loss (mean)"].startswith("🔴 ▲")  # the tiny model's loss is far above the lab's


def test_home_navigates_to_compare(runs_root):
    app = app_at("Home.py")
    app.run()
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Compare runs"
    assert "baseline_1B_r16_10k_600steps" in widget(app.multiselect, "Runs").value
    assert app.query_params["baseline"] == "baseline_1B_r16_10k_600steps"  # the picks land in the URL
    assert set(app.query_params["runs"].split(",")) == SEED_NAMES


def test_the_url_picks_the_runs_and_the_baseline_and_the_page_writes_changes_back(lab_root):
    app = open_page(
        {"runs": "t4_r64,cpu_tiny", "baseline": "cpu_tiny"}
    )  # a shared Compare?runs=...&baseline=...
    assert widget(app.multiselect, "Runs").value == ["t4_r64", "cpu_tiny"]
    assert widget(app.selectbox, "Baseline").value == "cpu_tiny"
    assert app.query_params == {"runs": "t4_r64,cpu_tiny", "baseline": "cpu_tiny"}
    assert {trace["name"] for trace in charts(app)["curves"]["data"]} == {"t4_r64", "cpu_tiny"}
    metrics = table(app, "Run").set_index("Run")
    assert (
        set(metrics.index) == {"t4_r64", "cpu_tiny"}
        and metrics.loc["cpu_tiny", "Δ Runtime (s)"] == "baseline"
    )

    widget(app.multiselect, "Runs").set_value(["t4_r16", "t4_r64", "cpu_tiny"])
    rerun(app)
    assert app.query_params == {"runs": "t4_r16,t4_r64,cpu_tiny", "baseline": "cpu_tiny"}
    widget(app.multiselect, "Runs").set_value(["t4_r16", "t4_r64"])  # the baseline is no longer picked
    rerun(app)
    assert widget(app.selectbox, "Baseline").value == "t4_r16"  # the default again: the older of the two
    assert app.query_params == {"runs": "t4_r16,t4_r64", "baseline": "t4_r16"}
    widget(app.selectbox, "Baseline").set_value("t4_r64")
    rerun(app)
    assert app.query_params == {"runs": "t4_r16,t4_r64", "baseline": "t4_r64"}
    assert table(app, "Run").set_index("Run").loc["t4_r64", "Δ Runtime (s)"] == "baseline"
    rerun(app)  # the page's next run reads the URL it wrote: nothing moves
    assert widget(app.multiselect, "Runs").value == ["t4_r16", "t4_r64"]
    assert widget(app.selectbox, "Baseline").value == "t4_r64"

    shared = open_page(dict(app.query_params))  # the address, opened in a new session, shows the same
    assert widget(shared.multiselect, "Runs").value == ["t4_r16", "t4_r64"]
    assert widget(shared.selectbox, "Baseline").value == "t4_r64"


def test_a_run_pages_compare_link_opens_that_run_whatever_was_picked_before(lab_root):
    app = open_page({"runs": "t4_r16,t4_r64", "baseline": "t4_r64"})
    app.query_params = {"run": "cpu_tiny"}
    app.switch_page("pages/2_Run.py")
    rerun(app)
    follow(app, "Compare")
    assert app.title[0].value == "Compare runs"
    assert widget(app.multiselect, "Runs").value == ["cpu_tiny"]
    assert widget(app.selectbox, "Baseline").value == "cpu_tiny"
    assert app.query_params == {"runs": "cpu_tiny", "baseline": "cpu_tiny"}
    widget(app.multiselect, "Runs").set_value(["cpu_tiny", "t4_r16"])
    rerun(app)
    assert app.query_params == {"runs": "cpu_tiny,t4_r16", "baseline": "cpu_tiny"}


def test_unknown_runs_in_the_url_are_left_out(lab_root):
    app = open_page({"runs": "gone,t4_r16,half", "baseline": "gone"})
    assert widget(app.multiselect, "Runs").value == ["t4_r16"]
    assert widget(app.selectbox, "Baseline").value == "t4_r16"
    assert app.query_params == {"runs": "t4_r16", "baseline": "t4_r16"}
    app = open_page({"runs": "gone"})  # none known: the default picks
    assert set(widget(app.multiselect, "Runs").value) == SEED_NAMES | {"t4_r16", "t4_r64", "cpu_tiny"}


def test_the_default_baseline_is_on_the_base_model_most_picked_runs_share(runs_root):
    """Tiny CPU runs (one named like a baseline, newest first in the list) picked with the lab's GPU
    runs: deltas against the tiny model would say little, so the baseline is one of the lab's."""
    import_seed_runs(runs_root)
    for name in ("tiny_a", "tiny_b", "tiny_baseline"):
        trained_run(
            runs_root,
            name,
            config={
                "base_model": "tiny-llama",
                "lora_r": 8,
                "max_steps": 20,
                "load_in_4bit": False,
                "backend": "hf",
            },
            events=training_events(
                20, 5.5, 3.0, seconds_per_step=0.08, tokens_per_step=300, memory_gb=0.5, seed=len(name)
            ),
            device="cpu",
            peak=0.55,
            lora=0.06,
        )
    app = open_page()
    picked = widget(app.multiselect, "Runs").value
    assert set(picked) == SEED_NAMES | {
        "tiny_a",
        "tiny_b",
        "tiny_baseline",
    }  # 4 runs on the 1B, 3 on tiny, 1 on 3B
    baseline = widget(app.selectbox, "Baseline").value
    assert baseline == "baseline_1B_r16_10k_600steps"
    assert read_json_object(runs_root / baseline / "config.json")["base_model"] == LAB_1B
    assert app.query_params["baseline"] == baseline

    app = open_page(
        {"runs": "tiny_a,tiny_b,tiny_baseline,baseline_1B_r16_10k_600steps"}
    )  # tiny is the majority
    assert widget(app.selectbox, "Baseline").value == "tiny_baseline"


def test_gguf_answers_are_labelled_as_the_command_line_names_them(lab_root):
    write_eval(lab_root / "t4_r64", "gguf-t4_r64-q8_0", eval_rows("gguf-t4_r64-q8_0", GOOD, latency=0.4))
    app = open_page({"runs": "t4_r64"})
    columns = widget(app.multiselect, "Answer columns")
    assert columns.options == ["t4_r64 · adapter", "t4_r64 · gguf:t4_r64-q8_0.gguf"]
    matrix = table(app, "Prompt").set_index("Prompt")
    assert list(matrix.columns) == ["t4_r64 · adapter", "t4_r64 · gguf:t4_r64-q8_0.gguf"]
    assert matrix.loc["vpn", "t4_r64 · gguf:t4_r64-q8_0.gguf"] == "✅ · 0.4 s"


def test_the_page_imports_no_training_or_inference_library(lab_root):
    """The page renders on an app-only install: neither it nor what it imports loads torch & co."""
    assert heavy_modules_after_rendering(PAGE) == []
    assert heavy_modules_after_rendering(PAGE, {"runs": "t4_r16,cpu_tiny", "baseline": "cpu_tiny"}) == []


def test_the_picks_survive_a_visit_to_another_page(runs_root):
    """Reached again by the sidebar (no picks in the URL), Compare shows the picks it showed."""
    import_seed_runs(runs_root)
    picks = {
        "runs": "exp3_1B_10k_600steps,model2_3B_r64_30k_400steps",
        "baseline": "model2_3B_r64_30k_400steps",
    }
    app = open_page(picks)
    app.switch_page("Home.py")
    app.query_params = {}
    rerun(app)
    app.switch_page(PAGE)
    app.query_params = {}
    rerun(app)
    assert app.multiselect(key="compare_runs").value == ["exp3_1B_10k_600steps", "model2_3B_r64_30k_400steps"]
    assert app.selectbox(key="compare_baseline").value == "model2_3B_r64_30k_400steps"
    assert app.query_params == picks


def test_a_run_named_twice_or_unknown_in_the_url_is_picked_once_or_said(runs_root):
    import_seed_runs(runs_root)
    app = open_page({"runs": "exp3_1B_10k_600steps,exp3_1B_10k_600steps,gone"})
    assert app.multiselect(key="compare_runs").value == ["exp3_1B_10k_600steps"]
    assert any("(left out): gone" in warning.value for warning in app.warning)


def test_a_check_detail_and_a_prompt_from_files_are_shown_literally(runs_root):
    """Answers planted with a check detail and a prompt that markdown would render as a remote
    image: the answer cell shows them as text (markdown-it, as in test_markdown_escaping)."""
    from markdown_it import MarkdownIt

    run = small_cpu_run(runs_root, "planted")
    image = "![x](http://127.0.0.1:9/pixel.png)"
    rows = eval_rows("adapter", GOOD, failing={"vpn": ("words", f"3 words {image}")})
    rows[0]["prompt"] = f"Explain {image}"
    write_eval(run, "adapter", rows)
    app = open_page({"runs": "planted"})
    shown = [element.value for element in app.markdown]
    assert any("pixel" in text and "words" in text for text in shown)
    assert any(text.startswith("**Explain") for text in shown)
    renderer = MarkdownIt("commonmark")
    assert not [text for text in shown if "<img" in renderer.render(text)]


def test_the_picked_runs_download_as_tensorboard_logs(runs_root):
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    for index in range(3):
        events = training_events(
            20, 2.0, 1.0, seconds_per_step=1.0, tokens_per_step=100, memory_gb=1.0, seed=index
        )
        trained_run(
            runs_root, f"tb{index}", config={"max_steps": 20}, events=events, device="cpu", peak=1.0, lora=0.1
        )
    app = open_page({"runs": "tb0,tb2"})
    next(
        button for button in app.button if button.label == "Prepare TensorBoard logs of the picked runs"
    ).click()
    rerun(app)
    download = next(button for button in app.get("download_button") if "TensorBoard" in button.proto.label)
    assert download.proto.label == "Download 2 run(s) as TensorBoard logs"
