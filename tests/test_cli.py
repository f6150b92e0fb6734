"""`python -m core runs ...` as a user runs it: real subprocesses, real exit codes."""

import json
import subprocess

from conftest import run_core

from core.store.experiments_log import LOG_COLUMNS


def core(*args: str, runs_root) -> subprocess.CompletedProcess:
    return run_core(*args, runs_root=runs_root, timeout=60)


def test_list_on_a_new_root_creates_nothing_and_says_how_to_seed(runs_root):
    done = core("runs", "list", runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    assert "No runs in" in done.stdout and "runs seed" in done.stdout
    assert not runs_root.exists()


def test_seed_then_list_shows_the_lab_runs(runs_root):
    done = core("runs", "seed", runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    assert "imported 5 run(s)" in done.stdout
    header, *rows = core("runs", "list", runs_root=runs_root).stdout.splitlines()
    assert header.split()[:3] == ["Run", "State", "Base"]
    assert len(rows) == 5
    baseline = next(row for row in rows if row.startswith("baseline_1B_r16_10k_600steps"))
    for figure in ("completed", "16/16", "600", "0.8918", "2594.04", "2.564", "1.361"):
        assert figure in baseline.split()
    again = core("runs", "seed", runs_root=runs_root)
    assert again.returncode == 0 and "5 already present" in again.stdout


def test_list_as_json(runs_root):
    core("runs", "seed", runs_root=runs_root)
    done = core("runs", "list", "--json", runs_root=runs_root)
    rows = json.loads(done.stdout)
    assert {row["name"]: row["train_loss"] for row in rows}["model2_3B_r64_30k_400steps"] == 0.7688


def test_export_then_import_into_another_root(runs_root, tmp_path):
    core("runs", "seed", runs_root=runs_root)
    out = tmp_path / "log.csv"
    done = core("runs", "export", str(out), runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    assert "wrote 5 run(s)" in done.stderr
    exported = out.read_text().splitlines()
    assert exported[0].startswith(",".join(LOG_COLUMNS))
    other = tmp_path / "other"
    done = core("runs", "import", str(out), runs_root=other)
    assert done.returncode == 0, done.stderr
    assert "imported 5 run(s)" in done.stdout
    assert core("runs", "export", "-", runs_root=other).stdout == out.read_text()


def test_export_from_a_missing_root_fails(runs_root, tmp_path):
    done = core("runs", "export", str(tmp_path / "out.csv"), runs_root=runs_root)
    assert done.returncode == 1 and done.stderr.startswith("error: no runs folder at")
    assert not runs_root.exists() and not (tmp_path / "out.csv").exists()


def test_an_unusable_runs_folder_gives_one_line_not_a_traceback(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    done = core("runs", "seed", runs_root=not_a_folder / "runs")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_import_with_malformed_rows_exits_non_zero_and_keeps_the_good_rows(runs_root, tmp_path):
    runs_root.mkdir()
    csv_file = tmp_path / "mixed.csv"
    csv_file.write_text(
        ",".join(LOG_COLUMNS) + "\n"
        "fine_run,m,train[:10],8,50,1.5,10.0,1.0,0.5\n"
        "broken_run,m,train[:10],8,fifty,1.5,10.0,1.0,0.5\n"
    )
    done = core("runs", "import", str(csv_file), runs_root=runs_root)
    assert done.returncode == 1
    assert "skipped line 3: max_steps 'fifty' is not a positive whole number" in done.stderr
    assert "imported 1 run(s), 1 row(s) skipped" in done.stdout
    listed = core("runs", "list", runs_root=runs_root).stdout
    assert "fine_run" in listed and "broken_run" not in listed


def test_import_of_a_missing_or_foreign_file_fails_cleanly(runs_root, tmp_path):
    runs_root.mkdir()
    done = core("runs", "import", str(tmp_path / "nope.csv"), runs_root=runs_root)
    assert done.returncode == 1 and done.stderr.startswith("error: cannot read")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b,c\n1,2,3\n")
    done = core("runs", "import", str(foreign), runs_root=runs_root)
    assert done.returncode == 1 and "lacks the column(s) run_name" in done.stderr
    assert list(runs_root.iterdir()) == []


def test_usage_errors_exit_2(runs_root):
    assert core(runs_root=runs_root).returncode == 2
    assert core("runs", "frobnicate", runs_root=runs_root).returncode == 2


def test_train_help_lists_the_config_fields_with_their_bounds(runs_root):
    done = core("train", "--help", runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    assert "config fields for --set KEY=VALUE" in done.stdout
    assert "  lora_r: a whole number from 1 to 1024; default 16" in done.stdout
    assert "  optimizer: one of auto, adamw_torch" in done.stdout


def test_an_import_larger_than_the_limit_is_refused_before_it_is_read(runs_root, tmp_path):
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as handle:  # sparse: 2 GB on paper, nothing on disk to read
        handle.truncate(2 << 30)
    result = core("runs", "import", str(huge), runs_root=runs_root)
    assert result.returncode == 1
    assert (
        "huge.csv: The file is 2,147,483,648 bytes" in result.stderr and "at most 5,242,880" in result.stderr
    )
    assert not runs_root.exists() or list(runs_root.iterdir()) == []


def test_check_prints_each_verdict_as_json_and_exits_0_whatever_it_is(runs_root, tmp_path):
    done = core("check", "swedish", "Kaffe är för varm för att drinka.", runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["prompt_set"], result["prompt_id"], result["verdict"], result["passed"]) == (
        "lab",
        "swedish",
        "fail",
        False,
    )
    assert [(c["name"], c["verdict"]) for c in result["checks"]] == [
        ("translation", "fail"),
        ("leakage", "pass"),
    ]
    assert result["checks"][0]["detail"] == "contains 'kaffe är', 'för varm', 'drinka', listed as wrong"
    answer = tmp_path / "answer.txt"
    answer.write_text(
        'Here is the translation:\n\n"Kaffet är på tok för varmt för att dricka."\n', encoding="utf-8"
    )
    judged = json.loads(core("check", "swedish", str(answer), "--file", runs_root=runs_root).stdout)
    assert (judged["verdict"], judged["passed"], judged["checks"][0]["verdict"]) == (
        "needs_judge",
        None,
        "needs_judge",
    )
    mine = tmp_path / "mine.json"
    mine.write_text(
        json.dumps({"name": "mine", "prompts": [{"id": "hi", "prompt": "Say hi.", "checks": []}]})
    )
    own = json.loads(core("check", "hi", "Hi!", "--prompts", str(mine), runs_root=runs_root).stdout)
    assert (own["prompt_set"], own["verdict"], [c["name"] for c in own["checks"]]) == (
        "mine",
        "pass",
        ["leakage"],
    )


def test_check_refuses_an_unknown_prompt_a_missing_file_and_a_bad_set(runs_root, tmp_path):
    done = core("check", "nope", "x", runs_root=runs_root)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: prompt set 'lab' has no prompt 'nope'; its prompts: vpn, ")
    done = core("check", "swedish", str(tmp_path / "missing.txt"), "--file", runs_root=runs_root)
    assert (
        done.returncode == 1
        and "error: cannot read" in done.stderr
        and "missing.txt is missing" in done.stderr
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "prompts": [{"id": "a", "prompt": "p", "checks": [{"type": "wordz"}]}]}')
    done = core("check", "a", "x", "--prompts", str(bad), runs_root=runs_root)
    assert done.returncode == 1 and "unknown check type 'wordz'" in done.stderr


def test_checks_calibrate_prints_the_agreement_and_fails_on_a_disagreement(runs_root, tmp_path):
    done = core("checks", "calibrate", runs_root=runs_root)
    assert done.returncode == 0, done.stdout + done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["Check", "type", "Pass", "Fail", "Agree", "Deferred", "Disagree"]
    assert rows[0].split() == ["translation", "19", "23", "40", "2", "0"]
    all_row = next(row for row in rows if row.startswith("all "))
    assert all_row.split()[-1] == "0" and len(rows) == 11 + 2  # 10 types, all, 2 deferred cases
    assert rows[-1].startswith("deferred: line ") and "(swedish/translation): the person says " in rows[-1]
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {
                "prompt": "swedish",
                "check": "translation",
                "answer": "Kafféet är för varm att dricka.",
                "expected": "pass",
                "reason": "T4, marked wrongly",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    done = core("checks", "calibrate", "--file", str(cases), runs_root=runs_root)
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1].startswith(
        "DISAGREES: line 1 (swedish/translation): the person says pass, the check fail: contains 'kafféet', "
        "'för varm'"
    )
    as_json = json.loads(
        core("checks", "calibrate", "--file", str(cases), "--json", runs_root=runs_root).stdout
    )
    assert (as_json[0]["agree"], as_json[0]["deferred"], as_json[0]["disagree"]) == (0, 0, 1)
    assert as_json[0]["disagreements"][0]["reason"] == "T4, marked wrongly"
    cases.write_text("not json\n")
    done = core("checks", "calibrate", "--file", str(cases), runs_root=runs_root)
    assert (
        done.returncode == 2
        and done.stderr == "error: cases.jsonl, line 1: not a JSON object (JSONDecodeError)\n"
    )
    cases.write_text(
        json.dumps({"prompt": "nope", "check": "words", "answer": "", "expected": "fail", "reason": "r"})
    )
    done = core("checks", "calibrate", "--file", str(cases), runs_root=runs_root)
    assert (
        done.returncode == 2 and "cases.jsonl, line 1: prompt set 'lab' has no prompt 'nope'" in done.stderr
    )
    usage = " ".join(core("checks", "calibrate", "--help", runs_root=runs_root).stdout.split())
    assert (
        "0 when no verdict disagrees (deferrals allowed), 1 when one does, 2 when the calibration set"
        in usage
    )
