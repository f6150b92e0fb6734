"""Deeper evaluation: lm-evaluation-harness benchmarks of a run's adapter and base model (real lm-eval
on the project's local tasks, as a real job), their table on Compare, and a pairwise judge served
by llama-cpp-python's own OpenAI-compatible server with the bundled SmolLM2 (never a mock)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import free_port
from conftest import PROJECT_DIR, app_at, rerun, run_core, write_conversations

from core.evaluate.bench import bench_frame, load_bench_results
from core.evaluate.judge import TIE, A, B, combined, read_verdict, win_rate
from core.evaluate.ratings import save_rating
from core.jobs.lifecycle import wait_for_job
from core.models.sources import bundled_path
from core.store.files import write_jsonl_atomic
from core.store.runs import create_run, initial_status
from core.train import tiny
from core.train.presets import get_preset

TASKS_DIR = PROJECT_DIR / "data" / "bench_tasks"
LOCAL_TASKS = "peft_capitals_mc,peft_capitals_gen"


@pytest.fixture(scope="module")
def capitals(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> Path:
    """A runs root with `capitals`: the tiny Llama taught the local tasks' 16 capitals."""
    root = tmp_path_factory.mktemp("bench-runs")
    work = tmp_path_factory.mktemp("bench-data")
    rows = [json.loads(line) for line in (TASKS_DIR / "capitals_mc.jsonl").read_text().splitlines()]
    data = write_conversations(
        work / "capitals.jsonl",
        [[("human", row["question"]), ("gpt", row["choices"][row["answer"]])] for row in rows],
    )
    config = {
        **get_preset("cpu_smoke").config(),
        "dataset": str(data),
        "max_steps": 40,
        "learning_rate": 1e-2,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        "packing": False,
    }
    (work / "config.json").write_text(json.dumps(config))
    cache = tmp_path_factory.mktemp("bench-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        tiny.tiny_model_dir().parent.mkdir(parents=True)
        tiny.tiny_model_dir().symlink_to(tiny_model_build, target_is_directory=True)
        done = run_core(
            "train", "capitals", "--config", str(work / "config.json"), runs_root=root, timeout=300
        )
        assert done.returncode == 0, done.stderr
        for variant in ("adapter", "base"):
            benched = run_core(
                "bench", "capitals", "--variant", variant, "--tasks", LOCAL_TASKS, runs_root=root
            )
            assert benched.returncode == 0, benched.stderr
    return root


def test_the_harness_scores_the_adapter_above_the_base_on_what_it_learned(capitals):
    run = capitals / "capitals"
    results = load_bench_results(run)
    scores = {variant: {s.task: s for s in found} for variant, found in results.items()}
    adapter, base = scores["adapter"]["peft_capitals_mc"], scores["base"]["peft_capitals_mc"]
    assert adapter.n == base.n == 16 and adapter.metric == "acc" and adapter.higher_is_better
    assert adapter.value > base.value  # the adapter is applied: it knows the capitals it was taught
    assert scores["adapter"]["peft_capitals_gen"].metric == "exact_match (strip)"
    document = json.loads((run / "eval" / "bench-adapter.json").read_text())
    assert [t["task"] for t in document["tasks"]] == ["peft_capitals_mc", "peft_capitals_gen"]
    assert document["versions"]["lm_eval"] and all(t["seconds"] > 0 for t in document["tasks"])
    assert json.loads((run / "jobs" / "bench.json").read_text())["state"] == "completed"


def test_the_compare_table_gives_deltas_with_intervals(capitals, tmp_path):
    run = capitals / "capitals"
    frame = bench_frame([("capitals", run)], "capitals")
    assert len(frame) == 4 and set(frame["Variant"]) == {"adapter", "base"}
    row = frame[(frame["Variant"] == "adapter") & (frame["Task"] == "peft_capitals_mc")].iloc[0]
    low, high = (float(x) for x in row["95% interval"].split(" to "))
    assert low < row["Score"] < high
    twin = tmp_path / "twin"
    (twin / "eval").mkdir(parents=True)
    scores = json.loads((run / "eval" / "bench-base.json").read_text())
    (twin / "eval" / "bench-adapter.json").write_text(json.dumps(scores))  # the base's scores as an adapter's
    (twin / "eval" / "bench-base.json").write_text('{"tasks": [{"task": "x", "value": "NaN"}, 7]}')
    both = bench_frame([("capitals", run), ("twin", twin)], "capitals")
    versus = both[(both["Run"] == "twin") & (both["Task"] == "peft_capitals_mc")].iloc[0]
    adapter_score = frame[(frame["Variant"] == "adapter") & (frame["Task"] == "peft_capitals_mc")][
        "Score"
    ].iloc[0]
    assert (
        versus["Δ vs capitals"] == pytest.approx(versus["Score"] - adapter_score)
        and versus["Δ vs capitals"] < 0
    )
    assert "to" in versus["Δ 95% interval"] and len(both) == 6  # the malformed base file adds nothing


def test_benchmarks_that_cannot_run_are_refused_before_a_job(capitals):
    for args, message in [
        (["--variant", "merged", "--tasks", LOCAL_TASKS], "has no merged model"),
        (["--tasks", "../secrets"], "is not a task name"),
        (["--tasks", "missing.yaml"], "no task file missing.yaml"),
        (["--tasks", " , "], "name at least one task"),
    ]:
        done = run_core("bench", "capitals", *args, runs_root=capitals)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)


def test_the_run_page_starts_a_benchmark_and_compare_shows_it(capitals, monkeypatch):
    monkeypatch.setenv("PEFT_RUNS_DIR", str(capitals))
    page = rerun(app_at("pages/2_Run.py", {"run": "capitals"}, timeout=120))
    scores = [frame.value for frame in page.dataframe if "Task" in frame.value.columns]
    assert scores and set(scores[0]["Variant"]) == {"adapter", "base"}
    page.text_input(key="bench_tasks").input("peft_capitals_mc").run()
    page.number_input(key="bench_limit").set_value(4).run()
    next(button for button in page.button if button.label == "Run benchmarks").click().run()
    assert not page.exception and not page.error
    view = wait_for_job(capitals / "capitals", "bench", timeout_s=300)
    assert view.state == "completed", view.error
    document = json.loads((capitals / "capitals" / "eval" / "bench-adapter.json").read_text())
    assert document["limit"] == 4 and [(t["task"], t["n"]) for t in document["tasks"]] == [
        ("peft_capitals_mc", 4)
    ]
    compare = rerun(app_at("pages/3_Compare.py", {"runs": "capitals"}))
    assert any(header.value == "Benchmarks and judge" for header in compare.subheader)


def test_verdicts_count_only_when_both_orders_agree():
    assert combined("1", "2") == A and combined("2", "1") == B  # the swapped order names the other side
    for forward, backward in [("1", "1"), ("2", "2"), ("tie", "2"), (None, "1"), ("1", None), ("tie", "tie")]:
        assert combined(forward, backward) == TIE
    assert read_verdict('Sure! {"reason": "clearer", "winner": "2"}') == ("2", "clearer")
    assert read_verdict("Answer 1 is better.")[0] is None and read_verdict('{"winner": "3"}')[0] is None
    rate, low, high = win_rate([A, A, A, TIE, B])
    assert rate == pytest.approx(0.7) and 0 <= low < rate < high <= 1
    assert win_rate([A] * 5) == (1.0, 1.0, 1.0)


PROMPTS = {
    "haiku": "Write a haiku about autumn.",
    "capital": "What is the capital of France?",
    "extra": "Say x.",
}


def evaluated(root: Path, name: str, answers: dict[str, str]) -> Path:
    """A completed run whose adapter answered these prompts (the judge reads evaluations, not models)."""
    path = create_run(root, name, get_preset("cpu_smoke").config(), status=initial_status("completed", 30))
    rows = [
        {"variant": "adapter", "prompt_set": "mine", "prompt_id": pid, "prompt": PROMPTS[pid], "answer": text}
        for pid, text in answers.items()
    ]
    (path / "eval").mkdir()
    write_jsonl_atomic(path / "eval" / "adapter.jsonl", rows)
    return path


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory: pytest.TempPathFactory):
    """llama-cpp-python's OpenAI-compatible server with the bundled SmolLM2 on a free port; its URL and log."""
    port, log = free_port(), tmp_path_factory.mktemp("judge") / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_path()), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).read()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.1)
        yield url, log
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_judge_asks_both_orders_and_reports_win_rate_and_agreement(judge_server, runs_root):
    url, log = judge_server
    first = evaluated(
        runs_root, "first", {"haiku": "Leaves fall\nsoft and slow\nautumn ends", "capital": "Paris."}
    )
    evaluated(
        runs_root, "second", {"haiku": "I like pizza.", "capital": "The capital is Berlin.", "extra": "x"}
    )
    save_rating(first, "adapter", "haiku", 5, "", answer="Leaves fall\nsoft and slow\nautumn ends")
    save_rating(runs_root / "second", "adapter", "haiku", 1, "", answer="I like pizza.")
    requests_before = log.read_text().count("POST /v1/chat/completions")
    done = run_core(
        "judge", "first", "second:adapter", "--endpoint", url, "--model", "smollm2", runs_root=runs_root
    )
    assert done.returncode == 0, done.stderr
    assert "win rate" in done.stdout and "agrees with your ratings on" in done.stdout
    judgement = json.loads((first / "eval" / "judge-adapter-vs-second-adapter.json").read_text())
    assert [row["prompt_id"] for row in judgement["prompts"]] == [
        "haiku",
        "capital",
    ]  # the prompts both answered
    assert (
        log.read_text().count("POST /v1/chat/completions") - requests_before == 4
    )  # each prompt in both orders
    for row in judgement["prompts"]:
        assert row["verdict"] == combined(row["a_first"]["winner"], row["b_first"]["winner"])
    counts = [judgement[key] for key in ("wins", "ties", "losses")]
    assert sum(counts) == 2 and judgement["interval"][0] <= judgement["win_rate"] <= judgement["interval"][1]
    assert judgement["agreement"]["prompts"] == 1  # only the haiku has both answers rated
    compare = rerun(app_at("pages/3_Compare.py", {"runs": "first,second"}))
    tables = [frame.value for frame in compare.dataframe if "A's win rate" in frame.value.columns]
    assert tables and tables[0]["A"].tolist() == ["first:adapter"]
    reasons = [frame.value for frame in compare.dataframe if "reason, A first" in frame.value.columns]
    assert reasons and reasons[0]["prompt"].tolist() == ["haiku", "capital"]


def test_a_judge_that_cannot_be_reached_or_has_nothing_to_judge_is_refused(runs_root):
    evaluated(runs_root, "first", {"capital": "Paris."})
    evaluated(runs_root, "second", {"haiku": "Leaves."})
    port = free_port()
    for args, message in [
        (["first", "second"], "answered no prompt in common"),
        (["first", "first:base"], "has no evaluation"),
        (["first", "missing"], "missing"),
    ]:
        done = run_core(
            "judge", *args, "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "m", runs_root=runs_root
        )
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
    evaluated(runs_root, "third", {"capital": "Rome."})
    done = run_core(
        "judge",
        "first",
        "third",
        "--endpoint",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "m",
        "--timeout",
        "5",
        runs_root=runs_root,
    )
    assert done.returncode == 1 and "the judge at" in done.stderr and "failed" in done.stderr
    done = run_core(
        "judge", "first", "third", "--endpoint", "file:///etc/passwd", "--model", "m", runs_root=runs_root
    )
    assert done.returncode == 1 and "is not an http(s) URL" in done.stderr


def test_the_judge_refuses_a_redirect_and_never_sends_the_key_elsewhere(runs_root, monkeypatch):
    import http.server
    import threading

    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the http.server API)
            seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/elsewhere")
            self.end_headers()

        do_GET = do_POST  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        evaluated(runs_root, "first", {"capital": "Paris."})
        evaluated(runs_root, "second", {"capital": "Rome."})
        monkeypatch.setenv("JUDGE_API_KEY", "sk-secret")
        url = f"http://127.0.0.1:{server.server_port}/v1"
        done = run_core("judge", "first", "second", "--endpoint", url, "--model", "m", runs_root=runs_root)
    finally:
        server.shutdown()
    assert done.returncode == 1 and "refused" in done.stderr
    assert [entry["path"] for entry in seen] == ["/v1/chat/completions"]  # nothing followed the redirect
    assert "sk-secret" not in done.stdout + done.stderr


def test_stored_scores_with_impossible_numbers_are_left_out(tmp_path):
    (tmp_path / "eval").mkdir()
    entries = [
        {"task": "huge", "metric": "acc", "value": 0.5, "n": 10**30, "seconds": 1.0},
        {"task": "slow", "metric": "acc", "value": 0.5, "n": 10, "seconds": 1e300},
        {"task": "fine", "metric": "acc", "value": 0.5, "stderr": 0.1, "n": 10, "seconds": 1.0},
    ]
    (tmp_path / "eval" / "bench-adapter.json").write_text(json.dumps({"tasks": entries}))
    assert [score.task for score in load_bench_results(tmp_path)["adapter"]] == ["fine"]
