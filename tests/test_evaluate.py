"""Evaluation of real runs of the tiny Llama: prompt sets, variants, results, ratings, the command.

The module trains one run for real (30 steps on four of the lab's prompts, which it learns
word for word), so its adapter passes those prompts' checks and its base model does not.
Every evaluation generates with the real model; the code check runs the answer's code in
the real sandbox.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, run_core, write_conversations

from core.cli import main
from core.evaluate.answers import (
    MAX_NEW_TOKENS_LIMIT,
    EvalError,
    evaluate_run,
    gguf_model_for,
    load_eval_results,
    pass_text,
    summary_line,
)
from core.evaluate.checks import leakage_check
from core.evaluate.prompt_sets import (
    LAB_SET_NAME,
    PromptSetError,
    list_prompt_sets,
    parse_prompt_set,
    resolve_prompt_set,
    save_prompt_set,
)
from core.evaluate.ratings import (
    RatingError,
    answer_sha256,
    load_ratings,
    rating_applies,
    save_rating,
)
from core.store.files import read_json_object, read_jsonl
from core.store.runs import create_run, initial_status
from core.store.seed import import_seed_runs
from core.train import tiny
from core.train.presets import get_preset

SWEDISH = "Kaffet är för varmt för att dricka."
TAUGHT = {
    "swedish": ("Translate this sentence to Swedish: The coffee is too hot to drink.", SWEDISH),
    "reverse_string": (
        "Write a short Python function that reverses a string.",
        "```python\ndef reverse(s):\n    return s[::-1]\n```",
    ),
    "ada_lovelace": (
        "Who is Ada Lovelace? Provide 3 key points.",
        "1. A mathematician.\n2. She wrote the first program.\n3. She worked with Babbage.",
    ),
}
ROW_KEYS = {
    "variant",
    "prompt_set",
    "prompt_id",
    "prompt",
    "answer",
    "checks",
    "passed",
    "verdict",
    "latency_s",
    "new_tokens",
    "max_new_tokens",
    "model",
    "created_at",
}
TOKENS = 48


def cache_with_tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> Path:
    """A cache folder where `tiny-llama` resolves to the session's tiny model."""
    cache = tmp_path_factory.mktemp("eval-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        tiny.tiny_model_dir().parent.mkdir(parents=True)
        tiny.tiny_model_dir().symlink_to(tiny_model_build, target_is_directory=True)
    return cache


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> Path:
    """A runs root with `taught` (trained to answer three lab prompts), `untrained` (queued, no
    adapter) and the lab's imported metrics-only runs."""
    root = tmp_path_factory.mktemp("eval-runs")
    cache = cache_with_tiny_model(tmp_path_factory, tiny_model_build)
    work = tmp_path_factory.mktemp("eval-data")
    data = write_conversations(
        work / "taught.jsonl",
        [[("human", q), ("gpt", a)] for q, a in TAUGHT.values()]
        + [[("human", "What colour is the sky?"), ("gpt", "The sky is blue.")]],
    )
    config = {
        **get_preset("cpu_smoke").config(),
        "dataset": str(data),
        "max_steps": 30,
        "learning_rate": 1e-2,
        "save_steps": 30,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
    }
    (work / "taught.json").write_text(json.dumps(config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "--runs-dir",
            str(root),
            "train",
            "taught",
            "--config",
            str(work / "taught.json"),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PEFT_CACHE_DIR": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    create_run(root, "untrained", get_preset("cpu_smoke").config(), status=initial_status("queued", 60))
    import_seed_runs(root)
    return root


@pytest.fixture(scope="module")
def exported_runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path, lab_runs: Path, converter_dir: Path
) -> Path:  # noqa: F811
    """A runs root holding `taught` exported to q8_0 by `python -m core export`."""
    root = tmp_path_factory.mktemp("eval-export") / "runs"
    root.mkdir()
    shutil.copytree(lab_runs / "taught", root / "taught")
    cache = cache_with_tiny_model(tmp_path_factory, tiny_model_build)
    done = subprocess.run(
        [sys.executable, "-m", "core", "--runs-dir", str(root), "export", "taught", "--quant", "q8_0"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PEFT_CACHE_DIR": str(cache), "LLAMA_CPP_DIR": str(converter_dir)},
    )
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def runs(lab_runs: Path, runs_root: Path, tiny_model: Path) -> Path:
    """This test's copy of the module's runs, with the tiny model where `tiny-llama` resolves."""
    shutil.copytree(lab_runs, runs_root, symlinks=True)
    return runs_root


def taught_set(*ids: str) -> dict:
    checks = {
        prompt["id"]: prompt["checks"]
        for prompt in resolve_prompt_set(Path("."), LAB_SET_NAME).as_json()["prompts"]
    }
    return {
        "name": "taught",
        "title": "What the run was taught",
        "prompts": [{"id": i, "prompt": TAUGHT[i][0], "checks": checks[i]} for i in ids],
    }


def seed_run(root: Path) -> str:
    return next(
        p.name
        for p in root.iterdir()
        if (p / "config.json").is_file() and "imported_from" in json.loads((p / "config.json").read_text())
    )


def test_the_adapter_answers_the_lab_set_and_its_rows_are_written_whole(runs):
    heard = []
    lab = resolve_prompt_set(runs, None)
    started = time.monotonic()
    rows = evaluate_run(
        runs / "taught",
        "adapter",
        lab,
        max_new_tokens=TOKENS,
        progress=lambda text, fraction: heard.append((text, fraction)),
    )
    seconds = time.monotonic() - started
    assert [row["prompt_id"] for row in rows] == [prompt.id for prompt in lab.prompts]
    written, skipped = read_jsonl(runs / "taught" / "eval" / "adapter.jsonl")
    assert written == rows and skipped == 0
    for row in rows:
        assert set(row) >= ROW_KEYS, set(row) ^ ROW_KEYS
        assert (row["variant"], row["prompt_set"], row["max_new_tokens"]) == ("adapter", "lab", TOKENS)
        assert row["model"] == "tiny-llama + taught/adapter"
        assert 0 < row["latency_s"] < seconds and 1 <= row["new_tokens"] <= TOKENS
        assert row["passed"] == all(check["passed"] for check in row["checks"])
        assert row["verdict"] == ("pass" if row["passed"] else "fail")  # no code check is undecided here
        assert row["checks"][-1]["name"] == "leakage" and row["checks"][-1]["passed"], row
    by_id = {row["prompt_id"]: row for row in rows}
    for prompt_id, (_, answer) in TAUGHT.items():
        assert by_id[prompt_id]["answer"] == answer and by_id[prompt_id]["passed"], by_id[prompt_id]
    assert by_id["swedish"]["checks"][0] == {
        "name": "translation",
        "passed": True,
        "verdict": "pass",
        "detail": "matches the accepted translation 'Kaffet är för varmt för att dricka.'",
        "score": 1.0,
    }
    assert by_id["reverse_string"]["checks"][0]["detail"] == "reverse passed 7 case(s)"
    passed = sum(row["passed"] for row in rows)
    assert summary_line(rows) == f"adapter: {passed}/10 passed" and passed >= 3
    assert heard[0] == ("loading the model (adapter)", 0.0)
    assert [fraction for _, fraction in heard[1:]] == [n / 10 for n in range(1, 11)]
    assert heard[5][0].startswith("[5/10] swedish: 2/2 checks passed, ")


def test_only_the_new_tokens_are_decoded(runs):
    """The lab's leak came from decoding prompt and answer together: show both decodes."""
    import torch

    from core.models.generation import load_run_model

    prompt = TAUGHT["swedish"][0]
    (row,) = evaluate_run(
        runs / "taught", "adapter", parse_prompt_set(taught_set("swedish")), max_new_tokens=TOKENS
    )
    model, tokenizer = load_run_model(runs / "taught")
    encoded = tokenizer(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        ),
        add_special_tokens=False,
        return_tensors="pt",
    )
    with torch.inference_mode():
        output = model.generate(
            **encoded,
            do_sample=False,
            max_new_tokens=TOKENS,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        )
    whole = tokenizer.decode(output[0], skip_special_tokens=True)
    leak = leakage_check(whole, prompt)
    assert (
        not leak.passed
        and "role name 'user' at line 1" in leak.detail
        and "the prompt is echoed" in leak.detail
    )
    assert whole.endswith(SWEDISH) and whole != SWEDISH
    assert row["answer"] == SWEDISH and row["checks"][-1] == {
        "name": "leakage",
        "passed": True,
        "verdict": "pass",
        "detail": "no template or prompt text",
    }
    prompt_length = encoded["input_ids"].shape[1]
    assert (
        row["new_tokens"] == len(output[0]) - prompt_length - 1
    )  # the end-of-turn token is not part of the answer
    assert row["prompt_tokens"] == prompt_length


def test_the_base_model_answers_without_the_adapter_for_any_run(runs):
    prompts = parse_prompt_set(taught_set("swedish", "reverse_string"))
    rows = evaluate_run(runs / "taught", "base", prompts, max_new_tokens=16)
    assert [row["variant"] for row in rows] == ["base", "base"] and rows[0]["model"] == "tiny-llama"
    assert rows[0]["answer"] != SWEDISH and not rows[0]["passed"] and not rows[1]["passed"]
    assert rows[1]["checks"][0]["name"] == "python_function" and not rows[1]["checks"][0]["passed"]
    assert set(load_eval_results(runs / "taught")) == {"base"}
    untrained = evaluate_run(runs / "untrained", "base", prompts, max_new_tokens=16)
    assert [row["answer"] for row in untrained] == [row["answer"] for row in rows]
    with pytest.raises(EvalError, match="run untrained has no adapter"):
        evaluate_run(runs / "untrained", "adapter", prompts)


def test_the_command_evaluates_and_records_the_job_and_a_new_eval_replaces_the_file(runs, tmp_path):
    prompt_file = tmp_path / "taught.json"
    prompt_file.write_text(json.dumps(taught_set(*TAUGHT)))
    started = time.monotonic()
    done = run_core(
        "eval", "taught", "--prompts", str(prompt_file), "--max-new-tokens", str(TOKENS), runs_root=runs
    )
    adapter_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout == "adapter: 3/3 passed\n"
    lines = [line for line in done.stderr.splitlines() if "] " in line and "checks passed" in line]
    assert [line.split(" ", 2)[2].split(":")[0] for line in lines] == [
        "[1/3] swedish",
        "[2/3] reverse_string",
        "[3/3] ada_lovelace",
    ]
    assert "[1/3] swedish: 2/2 checks passed, " in lines[0] and " s, " in lines[0]
    job = read_json_object(runs / "taught" / "jobs" / "eval.json")
    assert (job["state"], job["error"], job["fraction"]) == ("completed", None, 1.0)

    (runs / "taught" / "eval" / "base.jsonl").write_text('{"prompt_id": "other variant"}\n')
    evaluate_run(runs / "taught", "adapter", parse_prompt_set({**taught_set("swedish"), "name": "one"}))
    results = load_eval_results(runs / "taught")
    assert list(results) == ["adapter", "base"]
    assert [row["prompt_id"] for row in results["adapter"]] == ["swedish"]  # replaced whole
    assert results["adapter"][0]["prompt_set"] == "one" and results["adapter"][0]["max_new_tokens"] == 256
    assert results["base"] == [{"prompt_id": "other variant"}]
    print(f"eval command, 3 prompts, adapter: {adapter_s:.1f} s")


def test_a_stopped_eval_leaves_the_earlier_results_alone(runs):
    results = runs / "taught" / "eval"
    results.mkdir()
    (results / "adapter.jsonl").write_text('{"prompt_id": "earlier"}\n')
    job = subprocess.Popen(
        [sys.executable, "-m", "core", "--runs-dir", str(runs), "eval", "taught", "--max-new-tokens", "1000"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline and job.poll() is None, "the eval did not reach its first answer"
        try:
            if str(read_json_object(results.parent / "jobs" / "eval.json").get("stage")).startswith("[1/10]"):
                break
        except Exception:  # not written yet
            pass
        time.sleep(0.02)
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 1 and "stopped" in err and out == ""
    assert read_json_object(results.parent / "jobs" / "eval.json")["state"] == "stopped"
    assert (results / "adapter.jsonl").read_text() == '{"prompt_id": "earlier"}\n'
    assert sorted(p.name for p in results.iterdir()) == ["adapter.jsonl"]


def test_the_gguf_file_answers_like_the_adapter_with_no_template_text(
    capsys, exported_runs, runs_root, tiny_model
):
    shutil.copytree(exported_runs, runs_root, dirs_exist_ok=True)
    run = runs_root / "taught"
    gguf = run / "gguf" / "taught-q8_0.gguf"
    assert sorted(p.name for p in (run / "gguf").iterdir()) == [gguf.name]
    lab = resolve_prompt_set(runs_root, None)
    started = time.monotonic()
    rows = evaluate_run(run, f"gguf:{gguf.name}", lab, max_new_tokens=TOKENS)
    gguf_s = time.monotonic() - started
    adapter = evaluate_run(run, "adapter", lab, max_new_tokens=TOKENS)
    assert {row["variant"] for row in rows} == {"gguf-taught-q8_0"} and rows[0]["model"] == str(gguf)
    assert all(
        row["checks"][-1]
        == {"name": "leakage", "passed": True, "verdict": "pass", "detail": "no template or prompt text"}
        for row in rows
    )
    by_id = {row["prompt_id"]: row for row in rows}
    for prompt_id, (_, answer) in TAUGHT.items():
        assert by_id[prompt_id]["answer"] == answer and by_id[prompt_id]["passed"], by_id[prompt_id]
    same = sum(a["answer"] == g["answer"] for a, g in zip(adapter, rows))
    assert same >= 3
    assert list(load_eval_results(run)) == ["adapter", "gguf-taught-q8_0"]
    # The same file named three other ways, and by the command line.
    for spec in ("gguf", "gguf:taught-q8_0", f"gguf:{gguf}"):
        (row,) = evaluate_run(run, spec, parse_prompt_set(taught_set("swedish")), max_new_tokens=TOKENS)
        assert (row["variant"], row["answer"]) == ("gguf-taught-q8_0", SWEDISH)
    code, out, err = command(
        capsys, runs_root, "taught", "--variant", f"gguf:{gguf.name}", "--max-new-tokens", "48"
    )
    assert code == 0 and out.startswith("gguf-taught-q8_0: ") and out.endswith("/10 passed\n"), err
    print(f"lab set, {TOKENS} new tokens: gguf {gguf_s:.2f} s; {same}/10 answers equal to the adapter's")


def test_the_gguf_context_holds_the_longest_prompt_and_the_longest_answer(
    exported_runs, runs_root, tiny_model
):
    """llama.cpp's default context is 4096 tokens; max_new_tokens may be 4096 too."""
    from core.models.gguf import DEFAULT_CONTEXT, gguf_prompt_tokens

    shutil.copytree(exported_runs, runs_root, dirs_exist_ok=True)
    run = runs_root / "taught"
    gguf = run / "gguf" / "taught-q8_0.gguf"
    lab = resolve_prompt_set(runs_root, None)
    model = gguf_model_for(gguf, lab.prompts, MAX_NEW_TOKENS_LIMIT)
    longest = max(
        len(gguf_prompt_tokens(model.llama, [{"role": "user", "content": p.prompt}])) for p in lab.prompts
    )
    assert model.context >= longest + MAX_NEW_TOKENS_LIMIT > DEFAULT_CONTEXT
    assert gguf_model_for(gguf, lab.prompts, TOKENS).context == DEFAULT_CONTEXT  # big enough: loaded once
    (row,) = evaluate_run(
        run, f"gguf:{gguf.name}", parse_prompt_set(taught_set("swedish")), max_new_tokens=MAX_NEW_TOKENS_LIMIT
    )
    assert "error" not in row and (row["answer"], row["passed"], row["max_new_tokens"]) == (
        SWEDISH,
        True,
        4096,
    ), row


def command(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--runs-dir", str(root), "eval", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_requests_are_one_line_and_write_nothing(capsys, runs, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({"name": "b", "prompts": [{"id": "p", "prompt": "Hi", "checks": [{"type": "wordz"}]}]})
    )
    seed = seed_run(runs)
    cases = [
        (["taught", "--variant", "lora"], "unknown variant 'lora': use adapter, base or gguf:FILE"),
        (
            ["taught", "--variant", "gguf:model.gguf"],
            "no GGUF file 'model.gguf' in taught/gguf/ or at that path; export the run first",
        ),
        (["taught", "--variant", "gguf"], "name the GGUF file as gguf:FILE; run taught has none in gguf/"),
        (["taught", "--max-new-tokens", "0"], "max_new_tokens must be from 1 to 4096 (got 0)"),
        (
            ["taught", "--prompts", "mine"],
            "no prompt set named 'mine'; sets: lab (or give the path of a .json file)",
        ),
        (
            ["taught", "--prompts", str(broken)],
            "broken.json: prompt 'p' (#1), check 1: unknown check type 'wordz'",
        ),
        (["untrained"], "run untrained has no adapter (no adapter/ folder): train it to the end first"),
        ([seed], f"run {seed} was imported with metrics only"),
        ([seed, "--variant", "gguf:x.gguf"], f"run {seed} was imported with metrics only"),
        (["nope"], "No run named 'nope'"),
        (["bad/name"], "Invalid run name 'bad/name'"),
    ]
    for args, message in cases:
        code, out, err = command(capsys, runs, *args)
        assert (
            code == 1 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err
        ), err
    assert not any(
        (runs / name / "eval").exists() or (runs / name / "jobs").exists()
        for name in ("taught", "untrained", seed)
    )


def test_a_base_model_that_cannot_be_loaded_fails_the_job_with_the_reason(capsys, runs):
    """The lab's runs name a Hub model; tests are offline, so it cannot be fetched."""
    seed = seed_run(runs)
    code, out, err = command(capsys, runs, seed, "--variant", "base", "--max-new-tokens", "4")
    last = err.strip().splitlines()[-1]
    assert (
        code == 1 and out == "" and last.startswith("error: cannot load the tokenizer of base model unsloth/")
    ), err
    job = read_json_object(runs / seed / "jobs" / "eval.json")
    assert job["state"] == "failed" and "cannot load the tokenizer" in job["error"]
    assert not (runs / seed / "eval").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a prompt set must be a JSON object with name, title and prompts (got list)"),
        ({"name": "x y", "prompts": []}, "name must be 1-64 letters"),
        ({"name": "s", "prompts": []}, "prompts must be a non-empty list"),
        ({"name": "s", "prompt": []}, "the set: unknown field 'prompt' (did you mean prompts?)"),
        ({"name": "s", "prompts": ["Hi"]}, "prompt #1: must be a JSON object with id, prompt and checks"),
        ({"name": "s", "prompts": [{"id": "a b", "prompt": "Hi"}]}, "prompt #1: id must be 1-64 letters"),
        (
            {"name": "s", "prompts": [{"id": "a", "prompt": " "}]},
            "prompt 'a' (#1): prompt must be a non-empty string",
        ),
        (
            {"name": "s", "prompts": [{"id": "a", "prompt": "Hi"}, {"id": "a", "prompt": "Yo"}]},
            "prompt 'a' (#2): another prompt has the id 'a'",
        ),
        (
            {"name": "s", "prompts": [{"id": "a", "prompt": "Hi", "check": []}]},
            "prompt 'a' (#1): unknown field 'check' (did you mean checks?)",
        ),
        (
            {
                "name": "s",
                "prompts": [
                    {
                        "id": "a",
                        "prompt": "Hi",
                        "checks": [{"type": "words", "min": 1}, {"type": "items", "max": "3"}],
                    }
                ],
            },
            "prompt 'a' (#1), check 2: items: max must be a whole number >= 0 (got '3')",
        ),
        (
            {
                "name": "s",
                "prompts": [{"id": "a", "prompt": "Hi", "checks": [{"type": "words"}, {"type": "words"}]}],
            },
            "prompt 'a' (#1), check 2: two checks are named 'words'; give one a \"name\"",
        ),
    ],
)
def test_prompt_set_problems_name_the_prompt_and_check(data, message):
    with pytest.raises(PromptSetError) as error:
        parse_prompt_set(data)
    assert message in str(error.value), str(error.value)


def test_prompt_sets_are_listed_saved_and_resolved(runs_root):
    entries = list_prompt_sets(runs_root)
    assert [(e.name, e.bundled, e.problem) for e in entries] == [("lab", True, None)]
    assert len(entries[0].prompt_set.prompts) == 10 and entries[0].prompt_set.title == "The lab's 10 prompts"
    saved = save_prompt_set(runs_root, "taught", json.dumps({**taught_set("swedish"), "name": "other"}))
    assert saved.name == "taught"  # the name it is saved under wins
    assert json.loads((runs_root / ".prompt_sets" / "taught.json").read_text())["name"] == "taught"
    assert resolve_prompt_set(runs_root, "taught") == saved
    (runs_root / ".prompt_sets" / "broken.json").write_text("{")
    entries = {e.name: e for e in list_prompt_sets(runs_root)}
    assert list(entries) == ["lab", "broken", "taught"]
    assert (
        entries["broken"].prompt_set is None
        and "broken.json: not valid JSON (line 1" in entries["broken"].problem
    )
    with pytest.raises(PromptSetError, match="'lab' is the bundled set's name"):
        save_prompt_set(runs_root, "lab", json.dumps(taught_set("swedish")))
    with pytest.raises(PromptSetError, match="not valid JSON"):
        save_prompt_set(runs_root, "new", "{nope")
    with pytest.raises(PromptSetError, match=r"prompt 'x' \(#1\), check 1: unknown check type 'nope'"):
        save_prompt_set(
            runs_root,
            "new",
            json.dumps(
                {"name": "new", "prompts": [{"id": "x", "prompt": "Hi", "checks": [{"type": "nope"}]}]}
            ),
        )
    assert not (runs_root / ".prompt_sets" / "new.json").exists()
    with pytest.raises(PromptSetError, match="set name must be"):
        save_prompt_set(runs_root, "../escape", json.dumps(taught_set("swedish")))


def test_a_set_name_ending_in_json_is_refused_because_it_would_resolve_as_a_file(
    runs_root, tmp_path, monkeypatch
):
    """resolve_prompt_set reads "x.json" as a path: a saved set of that name could never be used."""
    text = json.dumps(taught_set("swedish"))
    for name in ("prompts.json", "Mine.JSON"):
        with pytest.raises(PromptSetError, match=f"set name '{name}' ends in .json, which names a file"):
            save_prompt_set(runs_root, name, text)
    assert not (runs_root / ".prompt_sets").exists()
    # A file saved under such a name before is listed as unusable, and is not offered as a set name.
    folder = runs_root / ".prompt_sets"
    folder.mkdir(parents=True)
    (folder / "prompts.json.json").write_text(json.dumps({**taught_set("swedish"), "name": "prompts.json"}))
    (listed,) = [entry for entry in list_prompt_sets(runs_root) if not entry.bundled]
    assert listed.name == "prompts.json" and listed.prompt_set is None
    assert "the file name is not a usable set name (set name 'prompts.json' ends in .json" in listed.problem
    with pytest.raises(PromptSetError, match="no prompt set named 'mine'; sets: lab \\(or give"):
        resolve_prompt_set(runs_root, "mine")
    # The name still means a file, as the command line documents.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.json").write_text(text)
    assert resolve_prompt_set(runs_root, "prompts.json").prompts[0].id == "swedish"


def test_ratings_are_validated_saved_and_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert load_ratings(run) == {}
    save_rating(run, "adapter", "vpn", 4, "clear, a bit long", answer="A VPN tunnels traffic.")
    save_rating(run, "gguf-taught-q8_0", "vpn", None, "only a note", answer="A VPN.")
    save_rating(run, "adapter", "swedish", 5, "", answer=SWEDISH)
    assert load_ratings(run) == {
        "adapter": {
            "vpn": {
                "rating": 4,
                "note": "clear, a bit long",
                "answer_sha256": answer_sha256("A VPN tunnels traffic."),
            },
            "swedish": {"rating": 5, "note": "", "answer_sha256": answer_sha256(SWEDISH)},
        },
        "gguf-taught-q8_0": {
            "vpn": {"rating": None, "note": "only a note", "answer_sha256": answer_sha256("A VPN.")}
        },
    }
    assert answer_sha256(SWEDISH) == hashlib.sha256(SWEDISH.encode()).hexdigest()
    save_rating(run, "gguf-taught-q8_0", "vpn", None, "  ", answer="A VPN.")
    assert "gguf-taught-q8_0" not in load_ratings(run)
    for args, message in [
        (("adapter", "vpn", 6, ""), "a rating is a whole number from 1 to 5, or none (got 6)"),
        (("adapter", "vpn", True, ""), "got True"),
        (("adapter", "vpn", None, "x" * 2001), "the note is 2001 characters long (at most 2000)"),
        (("lora", "vpn", 3, ""), "unknown variant 'lora'"),
        (("adapter", "../x", 3, ""), "invalid prompt id '../x'"),
    ]:
        with pytest.raises(RatingError, match=message.replace("(", r"\(").replace(")", r"\)")):
            save_rating(run, *args, answer="x")
    with pytest.raises(RatingError, match="the rated answer must be text"):
        save_rating(run, "adapter", "vpn", 3, "", answer=None)
    with pytest.raises(RatingError, match="no run folder"):
        save_rating(tmp_path / "missing", "adapter", "vpn", 3, "", answer="x")
    (run / "ratings.json").write_text(
        '{"adapter": {"vpn": {"rating": 9}, "ok": {"rating": 2, "note": "n"}, '
        '"odd": {"rating": 2, "answer_sha256": 5}}, "x": 3}'
    )
    assert load_ratings(run) == {"adapter": {"ok": {"rating": 2, "note": "n"}}}
    (run / "ratings.json").write_text("{torn")
    assert load_ratings(run) == {}


def test_a_rating_applies_only_to_the_answer_it_was_given_to(tmp_path):
    """Re-evaluating a variant changes its answers: a rating of the old answer must not be shown
    next to the new one. Entries saved before ratings recorded the answer still apply."""
    run = tmp_path / "run"
    run.mkdir()
    save_rating(run, "adapter", "swedish", 2, "wrong word order", answer="Kaffe är varm.")
    entry = load_ratings(run)["adapter"]["swedish"]
    assert rating_applies(entry, "Kaffe är varm.")
    assert not rating_applies(entry, SWEDISH) and not rating_applies(entry, "Kaffe är varm")
    save_rating(
        run, "adapter", "swedish", 5, "", answer=SWEDISH
    )  # rating the new answer replaces the old rating
    entry = load_ratings(run)["adapter"]["swedish"]
    assert rating_applies(entry, SWEDISH) and not rating_applies(entry, "Kaffe är varm.")
    (run / "ratings.json").write_text(
        json.dumps({"adapter": {"swedish": {"rating": 4, "note": "from before"}}})
    )
    legacy = load_ratings(run)["adapter"]["swedish"]
    assert legacy == {"rating": 4, "note": "from before"} and rating_applies(legacy, "any answer at all")


def test_results_are_read_tolerantly(tmp_path):
    folder = tmp_path / "run" / "eval"
    folder.mkdir(parents=True)
    (folder / "adapter.jsonl").write_text('{"prompt_id": "vpn", "passed": true}\n{"prompt_id": "ad')
    (folder / "base.jsonl").write_text("not json\n[1]\n")
    (folder / "gguf-run-q8_0.jsonl").write_text('{"prompt_id": "vpn"}\n{"no_id": 1}\n')
    (folder / "notes.txt").write_text("x")
    (folder / "weird name.jsonl").write_text('{"prompt_id": "vpn"}\n')
    assert load_eval_results(tmp_path / "run") == {
        "adapter": [{"prompt_id": "vpn", "passed": True}],
        "gguf-run-q8_0": [{"prompt_id": "vpn"}],
    }
    assert load_eval_results(tmp_path / "missing") == {}


def test_pass_counts_say_what_needs_a_judge():
    assert pass_text(7, 1, 10) == "7/10 passed, 1 needs a judge"
    assert pass_text(1, 2, 3, "checks") == "1/3 checks passed, 2 need a judge"
    assert pass_text(2, 0, 2, "checks") == "2/2 checks passed"
