"""Automatic checks of a model's answer to an evaluation prompt.

A prompt set names its checks as JSON objects, `{"type": "words", "min": 20, "max": 150}`,
optionally with a `"name"` to tell two checks of one type apart. CHECK_TYPES lists every type
with its parameters; `validate_check` refuses unknown types and parameters and bad values
with a message that names them. Every answer is also checked for leakage (chat-template or
system text in the answer), which a prompt set does not list.

Lists are counted the way people and models write them: numbered (`1.` or `1)`) or bulleted
(`-`, `*`, `+`, `•`) lines, also inside Markdown headings or bold; nested items are left out
(numbered items win over bullets when both are there); an intro line and a closing line are
not items. Without list lines, the rows of a Markdown table, lines opened by a bold title
("**Goal**", two or more) or sentences opened by ordinals ("First, ... Second, ...") count instead.

Every check but leakage judges the answer's body (answer_body): what follows a leaked chat
template, so that the echoed prompt and the system header count only against leakage.
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

PASS = "pass"
FAIL = "fail"
NEEDS_JUDGE = "needs_judge"
NOT_RUN = "not_run"
VERDICTS = (PASS, FAIL, NEEDS_JUDGE, NOT_RUN)
"""A check's verdict: passed, failed, undecided by its rule (a person or an LLM judge decides), or
not run (answer code without isolation on this machine). Only PASS counts as passed."""

CHECK_MARKS = {PASS: "✅", FAIL: "❌", NEEDS_JUDGE: "⚖️", NOT_RUN: "⏸️"}
"""The one mark per verdict that pages, the matrix and reports show."""


def passed_of(verdict: str) -> bool | None:
    """A verdict as the `passed` field of results files: True on a pass, False on a fail, None when
    undecided (needs a judge, or not run)."""
    return {PASS: True, FAIL: False}.get(verdict)


def verdict_of(passed: bool | None) -> str:
    """The verdict a pass/fail outcome stands for; None is a check that was not run."""
    return NOT_RUN if passed is None else PASS if passed else FAIL


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict on one answer (VERDICTS); `score` is set by checks that measure a
    similarity."""

    name: str
    verdict: str
    detail: str
    score: float | None = None

    @property
    def passed(self) -> bool | None:
        """passed_of(verdict)."""
        return passed_of(self.verdict)

    def as_dict(self) -> dict[str, Any]:
        """The result as written to an eval results file: `passed` as before verdicts existed (None
        when undecided) and the `verdict` itself."""
        data: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "verdict": self.verdict,
            "detail": self.detail,
        }
        if self.score is not None:
            data["score"] = self.score
        return data


def stored_verdict(check: Mapping[str, Any]) -> str:
    """A stored check result's or eval row's verdict: its `verdict` when it is one of VERDICTS,
    else (a file written before verdicts) `passed` True passed, False failed, else not run."""
    verdict = check.get("verdict")
    if isinstance(verdict, str) and verdict in VERDICTS:
        return verdict
    passed = check.get("passed")
    return verdict_of(passed if isinstance(passed, bool) else None)


Outcome = tuple[str, str, float | None]
"""What a check type's function returns: verdict, detail, score."""


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
    r"^(?P<indent>[ \t]*+)(?:#{1,6}[ \t]+)?(?:\*\*|__)?[ \t]*"
    r"(?:(?P<number>\d{1,3})[.)]|[-*+•‣–])[ \t]+(?P<text>\S.*)$"
)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_ORDINAL_START = re.compile(r"(?:^|[.!?]\s++|\n)\s*+(?:\*\*)?(" + "|".join(_ORDINALS) + r")(?:ly)?\b", re.I)
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
_TABLE_SEPARATOR = re.compile(r"^\|?[\s:|-]*-[\s:|-]*$")
_BOLD_TITLE = re.compile(r"^(?:\*\*|__)[^*_\n]{1,80}(?:\*\*|__)")


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
    titles = sum(1 for line in lines if _BOLD_TITLE.match(line))
    if titles >= 2:
        return titles, "bold-titled paragraphs"
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


_CLOSER = re.compile(
    r"^(i )?hope (this|that|it) helps|^let me know|^feel free|^happy to help|^good luck|^enjoy", re.I
)


def _paragraph_count(text: str) -> int:
    """Blocks between blank lines, where a block with list items counts its items (and its text
    before them, if any, as one more); a first block that is one line ending in ":" (a lead-in)
    and a last block that is one pleasantry line ("I hope this helps!") are not counted."""
    blocks = [block.strip() for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]
    if len(blocks) > 1 and "\n" not in blocks[0] and blocks[0].endswith(":"):
        blocks = blocks[1:]
    if len(blocks) > 1 and "\n" not in blocks[-1] and _CLOSER.match(_plain(blocks[-1])):
        blocks = blocks[:-1]
    count = 0
    for block in blocks:
        lines = block.splitlines()
        items = [index for index, line in enumerate(lines) if _ITEM.match(line)]
        if len(items) < 2:
            count += 1
            continue
        lead = lines[: items[0]]
        count += len(items) + (1 if lead and not (len(lead) == 1 and lead[0].endswith(":")) else 0)
    return count


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


def _check_paragraphs(answer: str, spec: dict[str, Any]) -> Outcome:
    passed, detail = _bounds_text(
        _paragraph_count(answer), spec.get("min", 1), spec.get("max"), "paragraph(s)"
    )
    return verdict_of(passed), detail, None


def _check_words(answer: str, spec: dict[str, Any]) -> Outcome:
    count = _word_count(answer)
    passed, detail = _bounds_text(count, spec.get("min", 1), spec.get("max"), "words")
    return verdict_of(passed), (detail + " (empty answer)" if count == 0 else detail), None


def _check_items(answer: str, spec: dict[str, Any]) -> Outcome:
    count, how = count_items(answer)
    passed, detail = _bounds_text(count, spec.get("min", 1), spec.get("max"), "items")
    return verdict_of(passed), f"{detail} ({how})", None


def _check_section_items(answer: str, spec: dict[str, Any]) -> Outcome:
    heading, count = section_items(answer, spec["headings"])
    if heading is None:
        return FAIL, "no heading naming " + " / ".join(spec["headings"]), None
    passed, detail = _bounds_text(count, spec.get("min", 1), spec.get("max"), "items")
    return verdict_of(passed), f"{detail} under {heading[:40]!r}", None


def _check_mentions(answer: str, spec: dict[str, Any]) -> Outcome:
    text = answer.casefold()
    end = r"(?!\w)" if spec.get("whole_words") else ""
    found = [word for word in spec["words"] if re.search(r"(?<!\w)" + re.escape(word.casefold()) + end, text)]
    wanted = spec.get("min", 1)
    if len(found) >= wanted:
        return PASS, "mentions " + ", ".join(repr(word) for word in found[:4]), None
    return (
        FAIL,
        f"mentions {len(found)} of {', '.join(repr(w) for w in spec['words'])} (wanted {wanted})",
        None,
    )


_GREETING = re.compile(
    r"^(dear|hello|hi|hey|greetings|good (morning|afternoon|evening|day)|to whom it may concern)\b"
    r"|^to [^,:]{1,40},$",
    re.I,
)
_SIGN_OFF = re.compile(
    r"^((best|kind|warm|warmest)( regards| wishes)?|regards|sincerely( yours)?|yours( sincerely| truly| faithfully)?"
    r"|respectfully( yours)?|thank you( again| very much| so much)?( for [^.!]*)?|thanks( again| so much)?"
    r"|many thanks|cheers|all the best|with (gratitude|appreciation|thanks)|gratefully)\s*[,.!]?$",
    re.I,
)
GREETING_LINES = 6
"""A greeting is one of the first this many lines with text, and not the last line."""
SIGN_OFF_LINES = 8
"""A sign-off is one of the last this many lines with text, after the email's first line of body."""


def _content_lines(answer: str) -> list[str]:
    return [plain for line in answer.splitlines() if (plain := _plain(line))]


def _greeting_line(lines: list[str]) -> int | None:
    """The index of the email's greeting in `lines` (_content_lines), or None."""
    for index, line in enumerate(lines[:GREETING_LINES]):
        if _GREETING.match(line) and index < len(lines) - 1:
            return index
    return None


def _check_greeting(answer: str, spec: dict[str, Any]) -> Outcome:
    lines = _content_lines(answer)
    index = _greeting_line(lines)
    if index is not None:
        return PASS, f"greeting {lines[index][:40]!r}", None
    return FAIL, "no greeting (Dear ..., Hello ...) at the start", None


def _check_sign_off(answer: str, spec: dict[str, Any]) -> Outcome:
    lines = _content_lines(answer)
    greeting = _greeting_line(lines)
    first = 1 if greeting is None else greeting + 2  # after the first line of the body
    for line in reversed(lines[max(first, len(lines) - SIGN_OFF_LINES) :]):
        if _SIGN_OFF.match(line):
            return PASS, f"sign-off {line[:40]!r}", None
    return FAIL, "no sign-off (Best regards, Sincerely, ...) at the end", None


def normalize_text(text: str) -> str:
    """Text compared for meaning only: NFC, case-folded, punctuation dropped, spaces collapsed."""
    text = unicodedata.normalize("NFC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def words_of(text: str) -> list[str]:
    """The words a translation is compared on: normalize_text's words."""
    return normalize_text(text).split()


def _find_words(words: Sequence[str], part: Sequence[str]) -> bool:
    """True when `part` occurs in `words` as consecutive words."""
    size = len(part)
    return any(words[i : i + size] == part for i in range(len(words) - size + 1) if words[i] == part[0])


def word_error_rate(words: Sequence[str], reference: Sequence[str]) -> float:
    """Word-level edit distance (substitutions, insertions, deletions) over the reference's length."""
    previous = list(range(len(reference) + 1))
    for index, word in enumerate(words, 1):
        current = [index]
        for position, wanted in enumerate(reference, 1):
            current.append(
                min(previous[position] + 1, current[-1] + 1, previous[position - 1] + (word != wanted))
            )
        previous = current
    return previous[-1] / max(len(reference), 1)


def _translation_candidates(answer: str) -> list[list[str]]:
    """The parts of an answer that may be its translation, as words: the whole answer, each line,
    what follows a line's last colon, each sentence and each quoted span."""
    candidates = [answer]
    for line in answer.splitlines():
        candidates.append(line)
        candidates.append(line.rpartition(":")[2])
        candidates.extend(re.split(r"(?<=[.!?])\s+", line))
    candidates.extend(re.findall(r"[\"“”„«»'*]+([^\"“”„«»*\n]{3,}?)[\"“”„«»'*]+", answer))
    unique = dict.fromkeys(tuple(words) for c in candidates if (words := words_of(c)))
    return [list(words) for words in unique]


def translation_references(spec: Mapping[str, Any]) -> list[str]:
    """A translation check's accepted translations: `reference` first, then `references`."""
    return ([spec["reference"]] if "reference" in spec else []) + list(spec.get("references", []))


def _shown(text: str, limit: int = 50) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _closest(candidates: list[list[str]], references: list[list[str]]) -> tuple[float, list[str], int]:
    """The lowest word error rate of any candidate against any reference, that candidate, and the
    reference's index. A candidate whose length alone puts it further than the best so far is
    skipped (the rate is at least the length difference over the reference's length)."""
    best: tuple[float, list[str], int] = (float("inf"), [], 0)
    for number, reference in enumerate(references):
        for words in candidates:
            if abs(len(words) - len(reference)) / len(reference) >= best[0]:
                continue
            rate = word_error_rate(words, reference)
            if rate < best[0]:
                best = (rate, words, number)
    return best


def _check_translation(answer: str, spec: dict[str, Any]) -> Outcome:
    texts = translation_references(spec)
    references = [words_of(text) for text in texts]
    words = words_of(answer)
    if not words:
        return FAIL, "empty answer", 0.0
    wrong = [form for form in spec.get("wrong", []) if _find_words(words, words_of(form))]
    if wrong:
        return FAIL, "contains " + ", ".join(_shown(form) for form in wrong[:4]) + ", listed as wrong", 0.0
    for text, reference in zip(texts, references):
        if _find_words(words, reference):
            return PASS, f"matches the accepted translation {_shown(text)}", 1.0
    rate, closest, number = _closest(_translation_candidates(answer), references)
    ceiling = spec.get("max_wer", MAX_WORD_ERROR_RATE)
    score = round(max(0.0, 1 - rate), 3)
    measured = (
        f"{_shown(' '.join(closest))}: word error rate {rate:.2f} against {_shown(texts[number])}, "
        f"fails above {ceiling:g}"
    )
    if rate > ceiling:
        return FAIL, f"{measured}; no accepted translation", score
    return NEEDS_JUDGE, f"{measured}; close to, but not, an accepted translation", score


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


def _check_python_function(answer: str, spec: dict[str, Any]) -> Outcome:
    code = extract_code(answer)
    if code is None:
        return FAIL, "no Python code in the answer", None
    cases = [(case["args"], case["expected"]) for case in spec["cases"]]
    verdict = run_function_cases(
        code,
        cases,
        function=spec.get("function"),
        limits=limits_for_timeout(spec.get("timeout_s", DEFAULT_TIMEOUT_S)),
    )
    unisolated = " (unisolated: audit hook only)" if verdict.isolation == "audit-hook" else ""
    return verdict_of(verdict.passed), verdict.reason + unisolated, None


# ---------------------------------------------------------------------------------------
# Leakage: chat-template or system text in an answer


_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<(?:bos|eos)>")
_SYSTEM_HEADER = re.compile(r"cutting knowledge date|today date", re.I)
_ROLE_LINE = re.compile(
    r"^[ \t]*(system|user|assistant)[ \t]*(:|$)|[.!?](system|user|assistant)[ \t]*$", re.I | re.M
)


_ASSISTANT_TURN = re.compile(
    r"<\|start_header_id\|>assistant<\|end_header_id\|>|(?:^[ \t]*|[.!?])assistant[ \t]*$", re.I | re.M
)


def answer_body(answer: str) -> str:
    """The answer without a leaked chat template: what follows its last assistant turn marker (a
    line "assistant", the prompt ending in "assistant", the Llama 3 header), template tokens removed."""
    turns = list(_ASSISTANT_TURN.finditer(answer))
    body = answer[turns[-1].end() :] if turns else answer
    return _SPECIAL_TOKEN.sub("", body).strip("\n")


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
        return CheckResult("leakage", FAIL, "; ".join(found))
    return CheckResult("leakage", PASS, "no template or prompt text")


# ---------------------------------------------------------------------------------------
# Check types, their parameters and validation

MAX_WORD_ERROR_RATE = 0.5
"""A translation that matches no accepted translation fails when even its closest part is further
than this word error rate from every one of them (another sentence, another language, the source
repeated); closer, a judge decides."""

MAX_ANSWER_CHARS = 20_000
"""The longest answer a person's own answer may be (`core check`, the "try an answer" box, a
calibration set): a 4096-token answer fits."""

MAX_TEXTS = 20
"""At most this many entries in a list parameter (references, wrong forms, words, headings)."""

MAX_TEXT_CHARS = 500
"""At most this many characters in one text parameter or list entry."""


@dataclass(frozen=True)
class CheckType:
    """A kind of check: what it does, its parameters (name -> kind) and which are required."""

    summary: str
    params: dict[str, str]
    required: tuple[str, ...]
    run: Callable[[str, dict[str, Any]], Outcome]
    legacy: tuple[str, ...] = ()
    """Parameters of older prompt sets that are still accepted, and ignored."""


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
        "at least `min` (default 1) of `words` appear, each as the start of a word (a whole word with "
        "`whole_words`: true), any case",
        {"words": "words", "min": "count", "whole_words": "flag"},
        ("words",),
        _check_mentions,
    ),
    "greeting": CheckType("an email greeting near the start", {}, (), _check_greeting),
    "sign_off": CheckType("an email sign-off near the end", {}, (), _check_sign_off),
    "translation": CheckType(
        "passes when the words of `reference` or one of `references` (normalized: case, accents in NFC, "
        "punctuation and quotes left out) occur in the answer in order, with anything around them; fails "
        "when it contains a form listed in `wrong`, or when its closest part is further than `max_wer` "
        f"(default {MAX_WORD_ERROR_RATE}) from every reference; otherwise needs a judge. `threshold` (the "
        "old character similarity) is accepted and ignored",
        {"reference": "text", "references": "texts", "wrong": "texts", "max_wer": "fraction"},
        (),
        _check_translation,
        legacy=("threshold",),
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
    elif kind == "flag":
        if not isinstance(value, bool):
            return f"{key} must be true or false (got {value!r})"
    elif kind == "text":
        if not isinstance(value, str) or not value.strip():
            return f"{key} must be a non-empty string"
        if len(value) > MAX_TEXT_CHARS:
            return f"{key} is {len(value)} characters long (at most {MAX_TEXT_CHARS})"
    elif kind == "identifier":
        if not isinstance(value, str) or not value.isidentifier():
            return f"{key} must be a Python identifier (got {value!r})"
    elif kind in ("words", "texts"):
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(w, str) and w.strip() for w in value)
        ):
            return f"{key} must be a non-empty list of non-empty strings"
        if len(value) > MAX_TEXTS:
            return f"{key} has {len(value)} entries (at most {MAX_TEXTS})"
        if longest := max((w for w in value if len(w) > MAX_TEXT_CHARS), key=len, default=None):
            return f"{key}: {longest[:40]!r}... is {len(longest)} characters long (at most {MAX_TEXT_CHARS})"
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


def _validate_translation(spec: dict[str, Any]) -> None:
    """A reference is required; every reference and wrong form has words; a wrong form may not be
    part of a reference (an answer that is that reference would fail)."""
    references = translation_references(spec)
    if not references:
        raise CheckSpecError("translation: reference or references is required")
    for text in [*references, *spec.get("wrong", [])]:
        if not words_of(text):
            raise CheckSpecError(f"translation: {text!r} has no words")
    for form in spec.get("wrong", []):
        if inside := next((r for r in references if _find_words(words_of(r), words_of(form))), None):
            raise CheckSpecError(f"translation: wrong form {form!r} is part of the reference {inside!r}")


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
    allowed = {"type", "name", *check_type.params, *check_type.legacy}
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
    if kind == "translation":
        _validate_translation(spec)
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
        verdict, detail, score = CHECK_TYPES[spec["type"]].run(answer_body(answer), spec)
    except Exception as exc:  # a check must never stop an evaluation
        return CheckResult(check_name(spec), FAIL, f"the check could not run: {describe(exc)}")
    return CheckResult(check_name(spec), verdict, detail, score)


def check_answer(checks: list[dict[str, Any]], answer: str, prompt: str) -> list[CheckResult]:
    """Every listed check, then the leakage check, on one answer."""
    return [run_check(spec, answer) for spec in checks] + [leakage_check(answer, prompt)]


def answer_verdict(checks: Sequence[Mapping[str, Any]]) -> str:
    """An answer's verdict from its stored check results: FAIL when one failed, else NEEDS_JUDGE
    when one needs a judge, else NOT_RUN when one was not run, else PASS."""
    verdicts = {stored_verdict(check) for check in checks}
    return next((v for v in (FAIL, NEEDS_JUDGE, NOT_RUN) if v in verdicts), PASS)
