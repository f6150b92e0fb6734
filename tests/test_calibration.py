"""The checks against a careful person's verdicts: the lab's calibration set, and how sets are read.

Every answer of data/check_calibration.jsonl runs through its real check (python_function answers
in the real sandbox) and its verdict must be the person's.
"""

import json
from collections import Counter

import pytest

from core.evaluate.calibration import (
    LAB_CALIBRATION_FILE,
    CalibrationError,
    agreement_rows,
    calibrate,
    load_calibration,
    parse_calibration,
)
from core.evaluate.checks import CHECK_TYPES, RESERVED_CHECK
from core.evaluate.prompt_sets import LAB_SET_FILE, load_prompt_set

LAB = load_prompt_set(LAB_SET_FILE)
CASES = load_calibration(LAB_CALIBRATION_FILE)


def line(prompt: str, check: str, answer: str, expected: str, reason: str = "why") -> str:
    return json.dumps(
        {"prompt": prompt, "check": check, "answer": answer, "expected": expected, "reason": reason}
    )


def test_every_verdict_of_the_lab_calibration_set_holds():
    agreements = calibrate(CASES, LAB)
    disagreements = [
        f"line {d.case.line} {d.case.prompt}/{d.case.check}: expected {d.case.expected}, got "
        f"{d.result.verdict} ({d.result.detail})"
        for a in agreements
        for d in a.disagreements
    ]
    assert disagreements == []
    assert {a.check_type for a in agreements} == {*CHECK_TYPES, RESERVED_CHECK}
    for agreement in agreements:
        assert agreement.expected["pass"] >= 8 and agreement.expected["fail"] >= 8, agreement.as_dict()
        assert agreement.agree == agreement.total
    assert agreement_rows(agreements)[-1] == {
        "check_type": "all",
        "agree": f"{len(CASES)}/{len(CASES)}",
        "percent": 100.0,
        **Counter(case.expected for case in CASES),
    }


def test_the_set_holds_the_lab_quoted_answers_and_few_deferred_verdicts():
    by_answer = {case.answer: case.expected for case in CASES if case.check == "translation"}
    assert by_answer["Kaffe är för varm för att drinka."] == "fail"  # T0
    assert by_answer["Kafféet är för varm att dricka."] == "fail"  # T4
    assert by_answer["The coffee is too hot to drink."] == "fail"  # T1-T3
    assert by_answer["Kaffet är alldeles för varmt att dricka."] == "pass"
    deferred = [case for case in CASES if case.expected == "needs_judge"]
    assert 0 < len(deferred) <= 3 and {case.check for case in deferred} == {"translation"}
    assert all(case.reason.strip() for case in CASES)


def test_a_wrong_expectation_is_a_disagreement():
    cases = parse_calibration(
        line("swedish", "translation", "Kaffe är för varm för att drinka.", "pass", "T0 written down wrongly")
        + "\n\n"
        + line("vpn", "leakage", "A VPN encrypts traffic.", "pass")
    )
    translation, leakage = calibrate(cases, LAB)
    assert (translation.agree, translation.total, leakage.agree) == (0, 1, 1)
    (wrong,) = translation.disagreements
    assert (wrong.case.line, wrong.result.verdict) == (1, "fail")
    assert translation.as_dict()["disagreements"][0]["got"] == "fail"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no cases"),
        ("{not json\n", "line 1: not a JSON object (JSONDecodeError)"),
        ("[1]\n", "line 1: must be a JSON object with prompt, check, answer, expected, reason"),
        (
            line("vpn", "words", "x", "maybe"),
            "line 1: expected must be one of pass, fail, needs_judge (got 'maybe')",
        ),
        (
            '{"prompt": "vpn", "check": "words", "answer": "x", "expected": "pass"}',
            "line 1: reason must be a",
        ),
        (
            line("vpn", "words", "x", "pass")[:-1] + ', "note": 1}',
            "line 1: unknown field 'note'; fields: prompt, check, answer, expected, reason",
        ),
        (
            line("vpn", "words", "x" * 20_001, "pass"),
            "line 1: the answer is 20001 characters long (at most 20000)",
        ),
        ("\n" + line("vpn", "words", "x", "pass"), None),
    ],
)
def test_bad_calibration_lines_are_refused_with_the_line(text, message):
    if message is None:
        assert parse_calibration(text)[0].line == 2
        return
    with pytest.raises(CalibrationError) as error:
        parse_calibration(text)
    assert message in str(error.value), str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (line("nope", "words", "x", "pass"), "prompt set 'lab' has no prompt 'nope'"),
        (
            line("vpn", "greeting", "x", "pass"),
            "prompt 'vpn' has no check 'greeting'; it has paragraphs, words",
        ),
        (
            line("overfitting", "mentions", "x", "pass"),
            "prompt 'overfitting' has 2 mentions checks: name one of",
        ),
    ],
)
def test_cases_naming_an_unknown_prompt_or_check_are_refused_before_any_check_runs(text, message):
    cases = parse_calibration(line("vpn", "words", "fine", "fail") + "\n" + text)
    with pytest.raises(CalibrationError) as error:
        calibrate(cases, LAB)
    assert str(error.value).startswith("line 2: " + message), str(error.value)


def test_a_calibration_file_too_big_is_refused_unread(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b" " * (2 << 20) + b"\n")
    with pytest.raises(CalibrationError, match="cannot read .*big.jsonl"):
        load_calibration(path)
