"""Automatic checks of a model's answer to an evaluation prompt.

A prompt set names its checks as JSON objects, `{"type": "words", "min": 20, "max": 150}`,
optionally with a `"name"` to tell two checks of one type apart. CHECK_TYPES lists every type
with its parameters; `validate_check` refuses unknown types and parameters and bad values
with a message that names them. Every answer is also checked for leakage (chat-template or
system text in the answer), which a prompt set does not list.

Lists are counted the way people and models write them: numbered (`1.` or `1)`) or bulleted
(`-`, `*`, `+`, `•`) lines, also inside Markdown headings or bold; nested items are left out
(numbered items win over bullets when both are there); an intro line and a closing line are
not items. Without list lines, the rows of a Markdown table or sentences opened by ordinals
("First, ... Second, ...") count instead.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core import describe
from core.evaluate.sandbox import DEFAULT_TIMEOUT_S, limits_for_timeout, run_function_cases, valid_timeout


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict on one answer; `passed` is None when the check was not run (answer
    code without isolation on this machine); `score` is set by checks that measure a similarity."""

    name: str
    passed: bool | None
    detail: str
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as written to an eval results file."""
        data: dict[str, Any] = {"name": self.name, "passed": self.passed, "detail": self.detail}
        if self.score is not None:
            data["score"] = self.score
        return data


class CheckSpecError(ValueError):
    """A check in a prompt set that cannot be run; the message says what is wrong."""


# ---------------------------------------------------------------------------------------
# Reading the structure of an answer


@dataclass(frozen=True)
class _Item:
    line: int
    indent: int
    numbered: bool
    text: str


_FENCE = re.compile(r"```[^\n]*\n.*?(?:```|\Z)", re.S)
_ITEM = re.compile(
    r"^(?P<indent>[ \t]*)(?:#{1,6}[ \t]+)?(?:\*\*|__)?[ \t]*"
    r"(?:(?P<number>\d{1,3})[.)]|[-*+•‣–])[ \t]+(?P<text>\S.*)$"
)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_ORDINAL_START = re.compile(r"(?:^|[.!?]\s+|\n)\s*(?:\*\*)?(" + "|".join(_ORDINALS) + r")(?:ly)?\b", re.I)
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
_TABLE_SEPARATOR = re.compile(r"^\|?[\s:|-]*-[\s:|-]*$")


def _without_code(text: str) -> str:
    return _FENCE.sub("\n", text)


def _indent_width(indent: str) -> int:
    return len(indent.replace("\t", "    "))


def _item(index: int, line: str) -> _Item | None:
    match = _ITEM.match(line)
    if not match:
        return None
    return _Item(index, _indent_width(match["indent"]), match["number"] is not None, match["text"])


def _top_level(items: list[_Item]) -> list[_Item]:
    """The outermost items: numbered ones if any, at the smallest indent they have."""
    chosen = [item for item in items if item.numbered] or items
    if not chosen:
        return []
    indent = min(item.indent for item in chosen)
    return [item for item in chosen if item.indent == indent]


def _table_rows(lines: list[str]) -> int:
    rows = 0
    table: list[str] = []
    for line in lines + [""]:
        if line.strip().startswith("|"):
            table.append(line.strip())
            continue
        if len(table) >= 3 and _TABLE_SEPARATOR.match(table[1]):
            rows += len(table) - 2
        table = []
    return rows


def count_items(text: str) -> tuple[int, str]:
    """How many items a list in `text` has, and how they were recognised."""
    lines = _without_code(text).splitlines()
    items = [item for index, line in enumerate(lines) if (item := _item(index, line))]
    top = _top_level(items)
    if top:
        return len(top), "numbered items" if top[0].numbered else "bulleted items"
    rows = _table_rows(lines)
    if rows:
        return rows, "table rows"
    ordinals = {match.group(1).lower() for match in _ORDINAL_START.finditer(text)}
    if ordinals:
        return len(ordinals), "sentences opened by First/Second/..."
    return 0, "no list"


def _plain(line: str) -> str:
    """A line without list markers, heading marks and emphasis."""
    match = _ITEM.match(line)
    text = match["text"] if match else line
    return re.sub(r"^#{1,6}\s+|[*_`]", "", text.strip()).strip()


def _looks_like_heading(line: str) -> bool:
    stripped = line.strip()
    if not stripped or _ITEM.match(line):
        return False
    plain = _plain(line)
    bold = re.fullmatch(r"(\*\*|__).+(\*\*|__):?", stripped) is not None
    short = len(_WORD.findall(plain)) <= 5 and not plain.endswith((".", "!", "?"))
    return stripped.startswith("#") or bold or plain.endswith(":") or short


def _inline_list(text: str) -> int:
    """Items listed after a colon in a heading line ("Ingredients: a, b and c")."""
    _, colon, rest = text.partition(":")
    if not colon:
        return 0
    parts = [p for p in re.split(r",\s*(?:and\s+|or\s+)?", rest.strip().rstrip(".")) if p.strip()]
    if len(parts) < 2 or any(len(_WORD.findall(part)) > 6 for part in parts):
        return 0
    return len(parts)


def _section_count(lines: list[str], start: int) -> int:
    """Items under the heading at `start`, up to the next heading."""
    heading = _item(start, lines[start])
    body: list[str] = []
    for line in lines[start + 1 :]:
        item = _item(0, line)
        if heading and item and item.numbered == heading.numbered and item.indent <= heading.indent:
            break
        if not heading and _looks_like_heading(line):
            break
        if heading and not item and _looks_like_heading(line) and line.strip().endswith(":"):
            break
        body.append(line)
    items = _top_level([item for index, line in enumerate(body) if (item := _item(index, line))])
    if items:
        return len(items)
    inline = _inline_list(_plain(lines[start]))
    if inline:
        return inline
    plain_lines = 0
    for line in lines[start + 1 :]:
        if (
            not line.strip()
            or _ITEM.match(line)
            or line.strip().endswith(":")
            or line.strip().startswith("#")
        ):
            break
        plain_lines += 1
    return plain_lines


def section_items(text: str, headings: list[str]) -> tuple[str | None, int]:
    """The first heading line naming one of `headings` with items under it, and their count.

    A heading is a line of at most 12 words that contains one of the words (whole words,
    any case); "advantages" does not match "disadvantages". Returns (None, 0) without one.
    """
    lines = _without_code(text).splitlines()
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(h) for h in headings) + r")\b", re.I)
    first_heading = None
    for index, line in enumerate(lines):
        plain = _plain(line)
        if not pattern.search(plain) or len(_WORD.findall(plain)) > 12:
            continue
        count = _section_count(lines, index)
        if count:
            return plain, count
        first_heading = first_heading or plain
    return first_heading, 0


def _word_count(text: str) -> int:
    return len(_WORD.findall(text))


def _paragraph_count(text: str) -> int:
    return len([block for block in re.split(r"\n\s*\n", text.strip()) if block.strip()])


def _bounds_text(count: int, low: int | None, high: int | None, unit: str) -> tuple[bool, str]:
    passed = (low is None or count >= low) and (high is None or count <= high)
    if passed:
        return True, f"{count} {unit}"
    if low is not None and high is not None:
        wanted = f"exactly {low}" if low == high else f"{low}-{high}"
    elif low is not None:
        wanted = f"at least {low}"
    else:
        wanted = f"at most {high}"
    return False, f"{count} {unit}, wanted {wanted}"


# ---------------------------------------------------------------------------------------
# The checks


def _check_paragraphs(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    passed, detail = _bounds_text(
        _paragraph_count(answer), spec.get("min", 1), spec.get("max"), "paragraph(s)"
    )
    return passed, detail, None


def _check_words(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    count = _word_count(answer)
    passed, detail = _bounds_text(count, spec.get("min", 1), spec.get("max"), "words")
    return passed, (detail + " (empty answer)" if count == 0 else detail), None


def _check_items(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    count, how = count_items(answer)
    passed, detail = _bounds_text(count, spec.get("min", 1), spec.get("max"), "items")
    return passed, f"{detail} ({how})", None


def _check_section_items(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    heading, count = section_items(answer, spec["headings"])
    if heading is None:
        return False, "no heading naming " + " / ".join(spec["headings"]), None
    passed, detail = _bounds_text(count, spec.get("min", 1), spec.get("max"), "items")
    return passed, f"{detail} under {heading[:40]!r}", None


def _check_mentions(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    text = answer.casefold()
    found = [word for word in spec["words"] if re.search(r"(?<!\w)" + re.escape(word.casefold()), text)]
    wanted = spec.get("min", 1)
    if len(found) >= wanted:
        return True, "mentions " + ", ".join(repr(word) for word in found[:4]), None
    return (
        False,
        f"mentions {len(found)} of {', '.join(repr(w) for w in spec['words'])} (wanted {wanted})",
        None,
    )


_GREETING = re.compile(
    r"^(dear|hello|hi|hey|greetings|good (morning|afternoon|evening|day)|to whom it may concern)\b", re.I
)
_SIGN_OFF = re.compile(
    r"^((best|kind|warm|warmest)( regards| wishes)?|regards|sincerely( yours)?|yours( sincerely| truly| faithfully)"
    r"|respectfully( yours)?|thank you( again| very much| so much)?( for [^.!]*)?|thanks( again| so much)?"
    r"|many thanks|cheers|all the best|with (gratitude|appreciation|thanks)|gratefully)\s*[,.!]?$",
    re.I,
)


def _content_lines(answer: str) -> list[str]:
    return [plain for line in answer.splitlines() if (plain := _plain(line))]


def _check_greeting(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    for line in _content_lines(answer)[:6]:
        if _GREETING.match(line):
            return True, f"greeting {line[:40]!r}", None
    return False, "no greeting (Dear ..., Hello ...) at the start", None


def _check_sign_off(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    for line in reversed(_content_lines(answer)[-8:]):
        if _SIGN_OFF.match(line):
            return True, f"sign-off {line[:40]!r}", None
    return False, "no sign-off (Best regards, Sincerely, ...) at the end", None


def normalize_text(text: str) -> str:
    """Text compared for meaning only: NFC, case-folded, punctuation dropped, spaces collapsed."""
    text = unicodedata.normalize("NFC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def _translation_candidates(answer: str) -> list[str]:
    candidates = [answer]
    for line in answer.splitlines():
        candidates.append(line)
        candidates.append(line.rpartition(":")[2])
        candidates.extend(re.split(r"(?<=[.!?])\s+", line))
    candidates.extend(re.findall(r"[\"“”„«»'*]+([^\"“”„«»*\n]{3,}?)[\"“”„«»'*]+", answer))
    return [normalized for c in candidates if (normalized := normalize_text(c))]


def _check_translation(answer: str, spec: dict[str, Any]) -> tuple[bool, str, float | None]:
    reference = normalize_text(spec["reference"])
    threshold = spec.get("threshold", TRANSLATION_THRESHOLD)
    candidates = _translation_candidates(answer)
    if reference in candidates:
        return True, "matches the reference", 1.0
    best, score = "", 0.0
    for candidate in candidates:
        ratio = difflib.SequenceMatcher(None, candidate, reference, autojunk=False).ratio()
        if ratio > score:
            best, score = candidate, ratio
    score = round(score, 3)
    if not best:
        return False, "empty answer", 0.0
    shown = best if len(best) <= 50 else best[:47] + "..."
    verdict = "close to" if score >= threshold else "differs from"
    return (
        score >= threshold,
        f"{shown!r} {verdict} the reference (similarity {score:.2f}, pass >= {threshold:g})",
        score,
    )


_CODE_BLOCK = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_LINE = re.compile(r"^(\s|def |class |import |from |return|@|#|[A-Za-z_]\w*\s*=)")


def extract_code(answer: str) -> str | None:
    """The Python code in an answer: the first fenced block with a function, else a bare `def`."""
    blocks = [(lang.lower(), body) for lang, body in _CODE_BLOCK.findall(answer)]
    python = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
    for body in python:
        if re.search(r"^\s*def \w+|lambda", body, re.M):
            return body.strip("\n")
    if python:
        return python[0].strip("\n")
    lines = answer.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"def \w+\s*\(", line):
            code = [line]
            for following in lines[index + 1 :]:
                if following.strip() and not _CODE_LINE.match(following):
                    break
                code.append(following)
            return "\n".join(code).strip("\n")
    return None


def _check_python_function(answer: str, spec: dict[str, Any]) -> tuple[bool | None, str, float | None]:
    code = extract_code(answer)
    if code is None:
        return False, "no Python code in the answer", None
    cases = [(case["args"], case["expected"]) for case in spec["cases"]]
    verdict = run_function_cases(
        code,
        cases,
        function=spec.get("function"),
        limits=limits_for_timeout(spec.get("timeout_s", DEFAULT_TIMEOUT_S)),
    )
    unisolated = " (unisolated: audit hook only)" if verdict.isolation == "audit-hook" else ""
    return verdict.passed, verdict.reason + unisolated, None


# ---------------------------------------------------------------------------------------
# Leakage: chat-template or system text in an answer


_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<(?:bos|eos)>")
_SYSTEM_HEADER = re.compile(r"cutting knowledge date|today date", re.I)
_ROLE_LINE = re.compile(
    r"^[ \t]*(system|user|assistant)[ \t]*(:|$)|[.!?](system|user|assistant)[ \t]*$", re.I | re.M
)


def leakage_check(answer: str, prompt: str) -> CheckResult:
    """Chat-template tokens, the system header, role names at line starts or the prompt echoed."""
    found: list[str] = []
    tokens = list(dict.fromkeys(_SPECIAL_TOKEN.findall(answer)))
    if tokens:
        found.append("template tokens " + ", ".join(tokens[:3]))
    header = _SYSTEM_HEADER.search(answer)
    if header:
        found.append(f"system header text {header.group(0)!r}")
    role = _ROLE_LINE.search(answer)
    if role:
        found.append(
            f"role name {(role.group(1) or role.group(3))!r} at line {answer.count(chr(10), 0, role.start()) + 1}"
        )
    answer_text, prompt_text = normalize_text(answer), normalize_text(prompt)
    if len(prompt_text.split()) >= 3 and prompt_text in answer_text:
        found.append("the prompt is echoed")
    if found:
        return CheckResult("leakage", False, "; ".join(found))
    return CheckResult("leakage", True, "no template or prompt text")


# ---------------------------------------------------------------------------------------
# Check types, their parameters and validation

TRANSLATION_THRESHOLD = 0.85
"""Similarity (difflib ratio of the normalized texts) a translation needs to pass when it is not
an exact match: a dropped article or letter passes, another sentence or language does not."""


@dataclass(frozen=True)
class CheckType:
    """A kind of check: what it does, its parameters (name -> kind) and which are required."""

    summary: str
    params: dict[str, str]
    required: tuple[str, ...]
    run: Callable[[str, dict[str, Any]], tuple[bool | None, str, float | None]]


CHECK_TYPES: dict[str, CheckType] = {
    "paragraphs": CheckType(
        "number of paragraphs (blocks between blank lines)",
        {"min": "count", "max": "count"},
        (),
        _check_paragraphs,
    ),
    "words": CheckType(
        "number of words; min defaults to 1, so an empty answer fails",
        {"min": "count", "max": "count"},
        (),
        _check_words,
    ),
    "items": CheckType(
        "number of top-level list items (min defaults to 1)",
        {"min": "count", "max": "count"},
        (),
        _check_items,
    ),
    "section_items": CheckType(
        "list items under a heading naming one of `headings`",
        {"headings": "words", "min": "count", "max": "count"},
        ("headings",),
        _check_section_items,
    ),
    "mentions": CheckType(
        "at least `min` (default 1) of `words` appear, each as the start of a word, any case",
        {"words": "words", "min": "count"},
        ("words",),
        _check_mentions,
    ),
    "greeting": CheckType("an email greeting near the start", {}, (), _check_greeting),
    "sign_off": CheckType("an email sign-off near the end", {}, (), _check_sign_off),
    "translation": CheckType(
        f"matches `reference` after normalizing, or is at least `threshold` similar "
        f"(default {TRANSLATION_THRESHOLD})",
        {"reference": "text", "threshold": "fraction"},
        ("reference",),
        _check_translation,
    ),
    "python_function": CheckType(
        "runs the answer's code in the sandbox and calls its function on each case's args",
        {"cases": "cases", "function": "identifier", "timeout_s": "seconds"},
        ("cases",),
        _check_python_function,
    ),
}
RESERVED_CHECK = "leakage"


def _check_param(key: str, kind: str, value: Any) -> str | None:
    """Why `value` does not fit the parameter kind, or None."""
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} must be a whole number >= 0 (got {value!r})"
    elif kind == "fraction":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            return f"{key} must be a number above 0 and at most 1 (got {value!r})"
    elif kind == "seconds":
        if not valid_timeout(value):
            return f"{key} must be a number of seconds from 0.1 to 60 (got {value!r})"
    elif kind == "text":
        if not isinstance(value, str) or not value.strip():
            return f"{key} must be a non-empty string"
    elif kind == "identifier":
        if not isinstance(value, str) or not value.isidentifier():
            return f"{key} must be a Python identifier (got {value!r})"
    elif kind == "words":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(w, str) and w.strip() for w in value)
        ):
            return f"{key} must be a non-empty list of non-empty strings"
    elif kind == "cases":
        if not isinstance(value, list) or not value:
            return f'{key} must be a non-empty list of {{"args": [...], "expected": ...}}'
        for number, case in enumerate(value, 1):
            if (
                not isinstance(case, dict)
                or set(case) != {"args", "expected"}
                or not isinstance(case["args"], list)
            ):
                return f'{key} {number} must be {{"args": [...], "expected": ...}}'
        if len({len(case["args"]) for case in value}) > 1:
            return f"every case in {key} must pass the same number of args"
    return None


def validate_check(spec: object) -> dict[str, Any]:
    """Return `spec` if it is a runnable check; raise CheckSpecError saying what is wrong."""
    if not isinstance(spec, dict):
        raise CheckSpecError(f'must be a JSON object with a "type" (got {type(spec).__name__})')
    kind = spec.get("type")
    if kind == RESERVED_CHECK:
        raise CheckSpecError("leakage is checked on every answer; do not list it")
    if kind not in CHECK_TYPES:
        raise CheckSpecError(f"unknown check type {kind!r}; known: {', '.join(CHECK_TYPES)}")
    check_type = CHECK_TYPES[kind]
    allowed = {"type", "name", *check_type.params}
    for key in spec:
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            raise CheckSpecError(
                f"{kind}: unknown parameter {key!r}"
                + (f" (did you mean {hint[0]}?)" if hint else f"; it takes {', '.join(sorted(allowed))}")
            )
    for key in check_type.required:
        if key not in spec:
            raise CheckSpecError(f"{kind}: {key} is required")
    if "name" in spec and (
        not isinstance(spec["name"], str)
        or not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", spec["name"])
        or spec["name"] == RESERVED_CHECK
    ):
        raise CheckSpecError(f"{kind}: name must be 1-40 letters, digits, '_', '.' or '-' (not leakage)")
    for key, param_kind in check_type.params.items():
        if key in spec and (problem := _check_param(key, param_kind, spec[key])):
            raise CheckSpecError(f"{kind}: {problem}")
    if kind == "mentions" and spec.get("min", 1) > len(spec["words"]):
        raise CheckSpecError(
            f"mentions: min ({spec['min']}) is more than the {len(spec['words'])} words given"
        )
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        raise CheckSpecError(f"{kind}: min ({spec['min']}) is above max ({spec['max']})")
    return spec


def check_name(spec: dict[str, Any]) -> str:
    """The name a check's result carries: its "name", else its type."""
    return spec.get("name") or spec["type"]


def run_check(spec: dict[str, Any], answer: str) -> CheckResult:
    """Run one validated check on an answer; a check that breaks fails with the reason."""
    try:
        passed, detail, score = CHECK_TYPES[spec["type"]].run(answer, spec)
    except Exception as exc:  # a check must never stop an evaluation
        return CheckResult(check_name(spec), False, f"the check could not run: {describe(exc)}")
    return CheckResult(check_name(spec), passed, detail, score)


def check_answer(checks: list[dict[str, Any]], answer: str, prompt: str) -> list[CheckResult]:
    """Every listed check, then the leakage check, on one answer."""
    return [run_check(spec, answer) for spec in checks] + [leakage_check(answer, prompt)]


def answer_passed(checks: Sequence[Mapping[str, Any]]) -> bool | None:
    """An answer's verdict from its stored check results: False when one failed, else None when
    one was not run (it counts neither as passed nor as failed), else True."""
    if any(check["passed"] is False for check in checks):
        return False
    return None if any(check["passed"] is None for check in checks) else True
