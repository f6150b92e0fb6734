"""How far the automatic checks agree with a careful person's verdicts, measured on a calibration set.

A calibration set is JSON lines, one answer per line: `{"prompt": PROMPT_ID, "check": NAME,
"answer": TEXT, "expected": "pass" | "fail", "reason": TEXT}`: the person's verdict, never the
tool's. `check` names one check of that prompt (its name, or its type when the prompt has one
check of that type), or `leakage`, which every answer gets. A check that leaves an answer to a
judge (needs_judge, or not_run) has deferred it: neither agreed nor disagreed. The lab's set ships
in data/check_calibration.jsonl; `python -m core checks calibrate` prints the agreement per check type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.evaluate.checks import (
    FAIL,
    MAX_ANSWER_CHARS,
    PASS,
    RESERVED_CHECK,
    CheckResult,
    check_name,
    leakage_check,
    run_check,
)
from core.evaluate.prompt_sets import EvalPrompt, PromptSet
from core.store.files import json_value, read_capped
from core.store.paths import DATA_DIR

LAB_CALIBRATION_FILE = DATA_DIR / "check_calibration.jsonl"


MAX_CALIBRATION_BYTES = 2 << 20


MAX_CASES = 2000


EXPECTED = (PASS, FAIL)
"""A person's verdicts: an answer passes or fails a check."""


FIELDS = ("prompt", "check", "answer", "expected", "reason")


class CalibrationError(ValueError):
    """A calibration set that cannot be used; the message names the file and the line at fault."""


@dataclass(frozen=True)
class CalibrationCase:
    """One answer with the verdict a careful person gives it on one check, and why; `source` and
    `line` say where it was read."""

    source: str
    line: int
    prompt: str
    check: str
    answer: str
    expected: str
    reason: str

    @property
    def where(self) -> str:
        """ "check_calibration.jsonl, line 3"."""
        return f"{self.source}, line {self.line}"


@dataclass(frozen=True)
class Verdict:
    """A case and its check's result."""

    case: CalibrationCase
    result: CheckResult

    def as_dict(self) -> dict[str, Any]:
        """The case as `checks calibrate --json` lists it."""
        return {
            "line": self.case.line,
            "prompt": self.case.prompt,
            "check": self.case.check,
            "expected": self.case.expected,
            "got": self.result.verdict,
            "detail": self.result.detail,
            "reason": self.case.reason,
        }


@dataclass
class Agreement:
    """One check type on its cases: how many the person passed and failed, how many the check
    decided the same way (agree), left to a judge (deferred) or decided the other way (disagree)."""

    check_type: str
    expected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXPECTED, 0))
    agree: int = 0
    deferrals: list[Verdict] = field(default_factory=list)
    disagreements: list[Verdict] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Cases of this check type."""
        return sum(self.expected.values())

    def as_dict(self) -> dict[str, Any]:
        """The agreement as `checks calibrate --json` prints it."""
        return {
            "check_type": self.check_type,
            "total": self.total,
            "expected": self.expected,
            "agree": self.agree,
            "deferred": len(self.deferrals),
            "disagree": len(self.disagreements),
            "deferrals": [verdict.as_dict() for verdict in self.deferrals],
            "disagreements": [verdict.as_dict() for verdict in self.disagreements],
        }


def _case(data: object, source: str, line: int) -> CalibrationCase:
    where = f"{source}, line {line}"
    if not isinstance(data, dict):
        raise CalibrationError(f"{where}: must be a JSON object with {', '.join(FIELDS)}")
    for key in data:
        if key not in FIELDS:
            raise CalibrationError(f"{where}: unknown field {key!r}; fields: {', '.join(FIELDS)}")
    for key in FIELDS:
        if not isinstance(data.get(key), str) or (key != "answer" and not data[key].strip()):
            raise CalibrationError(f"{where}: {key} must be a{' non-empty' * (key != 'answer')} string")
    if data["expected"] not in EXPECTED:
        raise CalibrationError(
            f"{where}: expected must be the person's verdict, {' or '.join(EXPECTED)} (got {data['expected']!r})"
        )
    if len(data["answer"]) > MAX_ANSWER_CHARS:
        raise CalibrationError(
            f"{where}: the answer is {len(data['answer'])} characters long (at most {MAX_ANSWER_CHARS})"
        )
    return CalibrationCase(
        source, line, data["prompt"], data["check"], data["answer"], data["expected"], data["reason"]
    )


def parse_calibration(text: str, source: str) -> list[CalibrationCase]:
    """The cases of a calibration set's JSON lines (blank lines are skipped), read from `source` (a
    file's name); CalibrationError names it and the first bad line."""
    cases = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            data = json_value(raw)
        except (ValueError, RecursionError) as exc:
            raise CalibrationError(
                f"{source}, line {line}: not a JSON object ({type(exc).__name__})"
            ) from None
        cases.append(_case(data, source, line))
        if len(cases) > MAX_CASES:
            raise CalibrationError(f"{source}, line {line}: more than {MAX_CASES} cases")
    if not cases:
        raise CalibrationError(f"{source}: no cases")
    return cases


def load_calibration(path: Path) -> list[CalibrationCase]:
    """The calibration set in the JSON-lines file at `path`; CalibrationError names the file (and line)."""
    try:
        text = read_capped(path, MAX_CALIBRATION_BYTES).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read {path}: {exc}") from None
    return parse_calibration(text, path.name)


def find_check(prompt: EvalPrompt, check: str) -> dict[str, Any] | None:
    """The check of `prompt` named `check`, else its only check of type `check`; None for leakage.
    CalibrationError when there is none, or several of that type."""
    if check == RESERVED_CHECK:
        return None
    named = [spec for spec in prompt.checks if check_name(spec) == check]
    typed = [spec for spec in prompt.checks if spec["type"] == check]
    if named or len(typed) == 1:
        return (named or typed)[0]
    names = ", ".join([check_name(spec) for spec in prompt.checks] + [RESERVED_CHECK])
    if typed:
        raise CalibrationError(f"prompt {prompt.id!r} has {len(typed)} {check} checks: name one of {names}")
    raise CalibrationError(f"prompt {prompt.id!r} has no check {check!r}; it has {names}")


def _resolved(
    cases: Sequence[CalibrationCase], prompt_set: PromptSet
) -> list[tuple[CalibrationCase, EvalPrompt, dict | None]]:
    prompts = {prompt.id: prompt for prompt in prompt_set.prompts}
    resolved = []
    for case in cases:
        prompt = prompts.get(case.prompt)
        if prompt is None:
            raise CalibrationError(
                f"{case.where}: prompt set {prompt_set.name!r} has no prompt {case.prompt!r}"
            )
        try:
            resolved.append((case, prompt, find_check(prompt, case.check)))
        except CalibrationError as exc:
            raise CalibrationError(f"{case.where}: {exc}") from None
    return resolved


def calibrate(cases: Sequence[CalibrationCase], prompt_set: PromptSet) -> list[Agreement]:
    """Run each case's check on its answer and compare the verdict with the person's; one Agreement
    per check type (leakage included), in the order the types first appear. Every case is resolved
    before any check runs: CalibrationError names the file and line of a case whose prompt or check
    is unknown."""
    agreements: dict[str, Agreement] = {}
    for case, prompt, spec in _resolved(cases, prompt_set):
        result = leakage_check(case.answer, prompt.prompt) if spec is None else run_check(spec, case.answer)
        check_type = RESERVED_CHECK if spec is None else spec["type"]
        agreement = agreements.setdefault(check_type, Agreement(check_type))
        agreement.expected[case.expected] += 1
        if result.verdict == case.expected:
            agreement.agree += 1
        elif result.verdict in EXPECTED:
            agreement.disagreements.append(Verdict(case, result))
        else:
            agreement.deferrals.append(Verdict(case, result))
    return list(agreements.values())


def agreement_rows(agreements: Sequence[Agreement]) -> list[dict[str, Any]]:
    """One table row per check type and a total row: the cases the person passed and failed, and how
    many the checks agreed on, deferred and disagreed on."""

    def row(check_type: str, group: Sequence[Agreement]) -> dict[str, Any]:
        return {
            "check_type": check_type,
            **{verdict: sum(a.expected[verdict] for a in group) for verdict in EXPECTED},
            "agree": sum(a.agree for a in group),
            "deferred": sum(len(a.deferrals) for a in group),
            "disagree": sum(len(a.disagreements) for a in group),
        }

    return [row(a.check_type, [a]) for a in agreements] + [row("all", agreements)]


AGREEMENT_COLUMNS = {
    "check_type": "Check type",
    PASS: "Pass",
    FAIL: "Fail",
    "agree": "Agree",
    "deferred": "Deferred",
    "disagree": "Disagree",
}
"""agreement_rows' columns and their headers (Pass/Fail: the person's verdicts)."""
