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
from core.evaluate.checks import CHECK_TYPES, RESERVED_CHECK, words_of
from core.evaluate.prompt_sets import LAB_SET_FILE, load_prompt_set

LAB = load_prompt_set(LAB_SET_FILE)
CASES = load_calibration(LAB_CALIBRATION_FILE)


def line(prompt: str, check: str, answer: str, expected: str, reason: str = "why") -> str:
    return json.dumps(
        {"prompt": prompt, "check": check, "answer": answer, "expected": expected, "reason": reason}
    )


def test_no_verdict_of_the_lab_calibration_set_disagrees_and_few_are_deferred():
    agreements = calibrate(CASES, LAB)
    disagreements = [
        f"line {d.case.line} {d.case.prompt}/{d.case.check}: the person says {d.case.expected}, the check "
        f"{d.result.verdict} ({d.result.detail})"
        for a in agreements
        for d in a.disagreements
    ]
    assert disagreements == []
    assert {a.check_type for a in agreements} == {*CHECK_TYPES, RESERVED_CHECK}
    for agreement in agreements:
        assert agreement.expected["pass"] >= 8 and agreement.expected["fail"] >= 8, agreement.as_dict()
        assert len(agreement.deferrals) <= agreement.total // 10, agreement.as_dict()["deferrals"]
        assert agreement.agree + len(agreement.deferrals) == agreement.total
    deferred = {(d.case.answer, d.result.verdict) for a in agreements for d in a.deferrals}
    assert deferred == {
        ("Kaffet är på tok för varmt för att dricka.", "needs_judge"),  # an added word: a synonym?
        ("Kaffet är för varmt för att dricka. Kaffet är för gott för att dricka.", "needs_judge"),
    }
    assert agreement_rows(agreements)[-1] == {
        "check_type": "all",
        **Counter(case.expected for case in CASES),
        "agree": len(CASES) - 2,
        "deferred": 2,
        "disagree": 0,
    }


def test_the_set_holds_the_lab_quoted_answers_the_held_out_near_misses_and_person_verdicts_only():
    by_answer = {case.answer: case.expected for case in CASES if case.check == "translation"}
    assert by_answer["Kaffe är för varm för att drinka."] == "fail"  # T0
    assert by_answer["Kafféet är för varm att dricka."] == "fail"  # T4
    assert by_answer["The coffee is too hot to drink."] == "fail"  # T1-T3
    assert by_answer["Kaffet är alldeles för varmt att dricka."] == "pass"
    translation = next(p for p in LAB.prompts if p.id == "swedish").checks[0]
    listed = {*translation["references"], translation["reference"], *translation["wrong"]}
    held_out = [
        "Kaffets är för varmt för att dricka.",
        "Kaffet är för varmare för att dricka.",
        "Kaffet är för varmt för att drickar.",
        "Kaffet är för varmt för dricka.",
        "Kaffet är varmt för att dricka.",
    ]
    for answer in held_out:
        assert by_answer[answer] == "fail" and answer not in listed
        words = f" {' '.join(words_of(answer))} "
        assert not any(f" {' '.join(words_of(form))} " in words for form in translation["wrong"]), answer
    assert {case.expected for case in CASES} == {"pass", "fail"}
    assert all(case.reason.strip() for case in CASES)


def test_a_wrong_expectation_is_a_disagreement_and_an_undecided_one_a_deferral():
    cases = parse_calibration(
        line("swedish", "translation", "Kaffe är för varm för att drinka.", "pass", "T0 written down wrongly")
        + "\n\n"
        + line("vpn", "leakage", "A VPN encrypts traffic.", "pass")
        + "\n"
        + line("swedish", "translation", "Kaffet är på tok för varmt för att dricka.", "pass"),
        "cases.jsonl",
    )
    translation, leakage = calibrate(cases, LAB)
    assert (translation.agree, translation.total, leakage.agree) == (0, 2, 1)
    (wrong,) = translation.disagreements
    (deferred,) = translation.deferrals
    assert (wrong.case.line, wrong.result.verdict, deferred.case.line) == (1, "fail", 4)
    as_dict = translation.as_dict()
    assert (as_dict["agree"], as_dict["deferred"], as_dict["disagree"]) == (0, 1, 1)
    assert as_dict["disagreements"][0]["got"] == "fail" and as_dict["deferrals"][0]["got"] == "needs_judge"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "set.jsonl: no cases"),
        ("{not json\n", "line 1: not a JSON object (JSONDecodeError)"),
        ("[1]\n", "line 1: must be a JSON object with prompt, check, answer, expected, reason"),
        (
            line("vpn", "words", "x", "maybe"),
            "line 1: expected must be the person's verdict, pass or fail (got 'maybe')",
        ),
        (
            line("vpn", "words", "x", "needs_judge"),
            "line 1: expected must be the person's verdict, pass or fail (got 'needs_judge')",
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
def test_bad_calibration_lines_are_refused_with_the_file_and_line(text, message):
    if message is None:
        assert parse_calibration(text, "set.jsonl")[0].line == 2
        return
    with pytest.raises(CalibrationError) as error:
        parse_calibration(text, "set.jsonl")
    assert str(error.value).startswith("set.jsonl") and message in str(error.value), str(error.value)


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
    cases = parse_calibration(line("vpn", "words", "fine", "fail") + "\n" + text, "set.jsonl")
    with pytest.raises(CalibrationError) as error:
        calibrate(cases, LAB)
    assert str(error.value).startswith("set.jsonl, line 2: " + message), str(error.value)


def test_a_calibration_file_too_big_is_refused_unread(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b" " * (2 << 20) + b"\n")
    with pytest.raises(CalibrationError, match="cannot read .*big.jsonl"):
        load_calibration(path)
