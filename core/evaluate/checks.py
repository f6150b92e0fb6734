"""Automatic checks of a model's answer to an evaluation prompt.

A prompt set names its checks as JSON objects, `{"type": "words", "min": 20, "max": 150}`,
optionally with a `"name"` to tell two checks of one type apart. CHECK_TYPES lists every type
with its parameters; `validate_check` refuses unknown types and parameters and bad values
with a message that names them. Every answer is also checked for leakage (chat-template or
system text in the answer), which a prompt set does not list.

Lists are counted the way people and models write them: numbered (`1.` or `1)`) or bulleted
(`-`, `*`, `+`, `•`) lines, also inside Markdown headings or bold; nested items are left out,
and of several lists the longest run counts (_top_level); an intro line and a closing line are
not items. Without list lines, the rows of a Markdown table, lines opened by a bold title
("**Goal**", two or more) or sentences opened by ordinals ("First, ... Second, ...") count instead.

Every check but leakage judges the answer's body (answer_body): what follows a leaked chat
template, so that the echoed prompt and the system header count only against leakage.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import os
import re
import unicodedata
from collections import Counter
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
    number: int | None
    text: str

    @property
    def numbered(self) -> bool:
        return self.number is not None


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
    number = int(match["number"]) if match["number"] is not None else None
    return _Item(index, _indent_width(match["indent"]), number, match["text"])


def _top_level(items: list[_Item]) -> list[_Item]:
    """The main list: of the items at the smallest indent, the longest run. Numbered items run on
    while their numbers do (1, 2, 3 or 1, 1, 1), whatever lies between; bulleted items run on up to
    a numbered item. Of equally long runs, a numbered one, then the first."""
    indent = min((item.indent for item in items), default=0)
    runs: list[list[_Item]] = []
    numbers: list[_Item] = []
    bullets: list[_Item] = []
    for item in items:
        if item.indent != indent:
            continue
        if item.number is None:
            if not bullets:
                runs.append(bullets)
            bullets.append(item)
            continue
        bullets = []
        if not numbers or numbers[-1].number not in (item.number, item.number - 1):
            numbers = []
            runs.append(numbers)
        numbers.append(item)
    return max(runs, key=lambda run: (len(run), run[0].numbered), default=[])


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
    """Items listed after a colon in a heading line ("Ingredients: a, b and c", "Advantages: clean
    and cheap."): parts split at commas and a last "and" or "or", each of at most 6 words."""
    _, colon, rest = text.partition(":")
    parts = [part for part in re.split(r",\s*(?:(?:and|or)\s+)?", rest.strip().rstrip(".")) if part.strip()]
    if not colon or not parts:
        return 0
    parts[-1:] = re.split(r"\s+(?:and|or)\s+", parts[-1])
    if any(_word_count(part) > 6 for part in parts):
        return 0
    return len(parts)


_LABEL = re.compile(r"^[^:]{1,40}:\s*\S")
"""A line opened by a label ("Disadvantages: intermittent"): another section, not an item."""


def _section_count(lines: list[str], start: int) -> int:
    """Items under the heading at `start`, up to the next heading."""
    heading = _item(start, lines[start])
    items = []
    for index in range(start + 1, len(lines)):
        line = lines[index]
        item = _item(index, line)
        if heading and item and item.numbered == heading.numbered and item.indent <= heading.indent:
            break
        if not heading and _looks_like_heading(line):
            break
        if heading and not item and _looks_like_heading(line) and line.strip().endswith(":"):
            break
        if item:
            items.append(item)
    top = _top_level(items)
    if top:
        return len(top)
    inline = _inline_list(_plain(lines[start]))
    if inline:
        return inline
    plain_lines = 0
    for index in range(start + 1, len(lines)):
        line = lines[index].strip()
        if not line or _ITEM.match(line) or line.endswith(":") or line.startswith("#") or _LABEL.match(line):
            break
        plain_lines += 1
    return plain_lines


def _table_column(lines: list[str], start: int, pattern: re.Pattern[str]) -> tuple[str, int] | None:
    """When the line at `start` is a Markdown table's header with a cell naming the heading: that
    cell, and the table's rows with text in its column."""
    if not lines[start].lstrip().startswith("|") or start + 1 >= len(lines):
        return None
    if not _TABLE_SEPARATOR.match(lines[start + 1].strip()):
        return None
    cells = [_plain(cell) for cell in lines[start].strip().strip("|").split("|")]
    column = next((index for index, cell in enumerate(cells) if pattern.search(cell)), None)
    if column is None:
        return None
    count = 0
    for line in lines[start + 2 :]:
        if not line.lstrip().startswith("|"):
            break
        row = line.strip().strip("|").split("|")
        count += column < len(row) and bool(_plain(row[column]))
    return cells[column], count


SENTENCE_HEADING_WORDS = 5
"""A heading (what comes before a colon) of more than this many words reads as a sentence: it heads
the section its last clause names ("Renewable energy has no real disadvantages, but here are the
advantages:" heads the advantages only)."""


def section_items(text: str, headings: list[str]) -> tuple[str | None, int]:
    """The first heading line naming one of `headings` with items under it, and their count.

    A heading is a line of at most 12 words that contains one of the words (whole words,
    any case) before a colon, if any (SENTENCE_HEADING_WORDS);
    "advantages" does not match "disadvantages". A Markdown table's header cell naming one is a
    heading too, over the rows with text in its column. Returns (None, 0) without one.
    """
    lines = _without_code(text).splitlines()
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(h) for h in headings) + r")\b", re.I)
    first_heading = None
    for index, line in enumerate(lines):
        if column := _table_column(lines, index, pattern):
            if column[1]:
                return column
            first_heading = first_heading or column[0]
            continue
        plain = _plain(line)
        named = plain.partition(":")[0]
        if _word_count(named) > SENTENCE_HEADING_WORDS:
            named = re.split(r"[,;]|\bbut\b", named)[-1]
        if not pattern.search(named) or _word_count(plain) > 12:
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
    r"^((with )?(best|kind|kindest|warm|warmest|many)( regards| wishes| thanks)?|regards|sincerely( yours)?"
    r"|yours( sincerely| truly| faithfully)?|respectfully( yours)?|cordially|warmly|gratefully|cheers"
    r"|thank you( again| very much| so much| in advance)?( for [^.!,]*)?|thanks( again| so much| a lot| in advance)?"
    r"( for [^.!,]*)?|all the best|take care|with (gratitude|appreciation|thanks)"
    r"|(i am |i'm |i )?look(ing)? forward to (hearing from you|your (reply|response|feedback))( soon)?)"
    r"\s*[,.!]?(?-i:\s*[A-Z\[][^\s,.!?]*(\s+[A-Z\[][^\s,!?]*){0,3})?$",
    re.I,
)
_LEAD_IN = re.compile(
    r"^(sure|certainly|of course|absolutely)\b|\b(here|below|following|template|draft)\b.*:$", re.I
)
_AFTER_EMAIL = re.compile(
    r"^((a few |some )?tips|notes?\b|key (points|elements)|why this works|explanation|customi[sz]"
    r"|remember\b|this (email|template|message)\b)",
    re.I,
)
_RULE = re.compile(r"^[ \t]*([-*_=])(?:[ \t]*\1){2,}[ \t]*$")
GREETING_LINES = 6
"""A greeting is one of the email's first this many lines with text, and not its last."""
GREETING_WORDS = 7
"""A greeting line of more than this many words also holds the body's first sentence."""
SIGNATURE_WORDS = 8
"""A sign-off may be followed by signature lines (name, title, phone, address, "P.S. ...") of at
most this many words each, up to the end of the email."""


@dataclass(frozen=True)
class _Line:
    text: str
    boundary: bool
    """A rule ("---") or a Markdown heading: what follows is not the email."""


def _email_lines(answer: str) -> list[_Line]:
    """The answer's lines with text (_plain), rules and headings marked."""
    lines = []
    for line in answer.splitlines():
        if _RULE.match(line):
            lines.append(_Line("", True))
        elif plain := _plain(line):
            lines.append(_Line(plain, line.lstrip().startswith("#")))
    return lines


def _greeting_line(lines: list[_Line]) -> int | None:
    """The index of the email's greeting in `lines` (_email_lines): one of the first GREETING_LINES
    lines with text, not a lead-in addressed to the user ("Hello! Here is an email you can send:")."""
    texts = [index for index, line in enumerate(lines) if not line.boundary]
    for index in texts[:GREETING_LINES]:
        text = lines[index].text
        if _GREETING.match(text) and not _LEAD_IN.search(text) and index < texts[-1]:
            return index
    return None


def _ends_email(line: _Line) -> bool:
    """A rule, a heading, or a line to the user after the email ("Tips ...", "I hope this helps!")."""
    return line.boundary or bool(_AFTER_EMAIL.match(line.text) or _CLOSER.match(line.text))


def _signature_follows(lines: list[_Line], start: int) -> bool:
    """Whether only signature lines follow `start`, up to the end of the email."""
    for line in lines[start:]:
        if _ends_email(line):
            return True
        if _word_count(line.text) > SIGNATURE_WORDS and not re.match(r"p\.?s\b", line.text, re.I):
            return False
    return True


def _check_greeting(answer: str, spec: dict[str, Any]) -> Outcome:
    lines = _email_lines(answer)
    index = _greeting_line(lines)
    if index is not None:
        return PASS, f"greeting {lines[index].text[:40]!r}", None
    return FAIL, "no greeting (Dear ..., Hello ...) at the start", None


def _check_sign_off(answer: str, spec: dict[str, Any]) -> Outcome:
    lines = _email_lines(answer)
    greeting = _greeting_line(lines)
    if greeting is None:
        first = 1
    else:  # after the body's first line, which may follow the greeting on its line
        first = greeting + (1 if _word_count(lines[greeting].text) > GREETING_WORDS else 2)
    for index in range(first, len(lines)):
        if lines[index].boundary:
            break
        if _SIGN_OFF.match(lines[index].text) and _signature_follows(lines, index + 1):
            return PASS, f"sign-off {lines[index].text[:40]!r}", None
    return FAIL, "no sign-off (Best regards, Sincerely, ...) after the email's body", None


class _Normalized(dict[int, str]):
    """str.translate's table for normalize_text, filled as characters are met: punctuation,
    symbols and spaces become a space, other control and format characters nothing."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        category = unicodedata.category(char)
        value = " " if char.isspace() or category[0] in "PS" else "" if category in ("Cc", "Cf") else char
        if len(self) < 1 << 16:
            self[code] = value
        return value


_NORMALIZED = _Normalized()


def normalize_text(text: str) -> str:
    """Text compared for meaning only: NFC, case-folded, punctuation dropped, control and format
    characters (NUL, zero-width space, soft hyphen) dropped, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().translate(_NORMALIZED).split())


def words_of(text: str) -> list[str]:
    """The words a translation is compared on: normalize_text's words."""
    return normalize_text(text).split()


def _find_words(words: Sequence[str], part: Sequence[str]) -> bool:
    """True when `part` occurs in `words` as consecutive words."""
    size = len(part)
    return any(words[i : i + size] == part for i in range(len(words) - size + 1) if words[i] == part[0])


def _distance_rows(words: Sequence[str], reference: Sequence[str], limit: float) -> list[list[int]] | None:
    """The word-level edit distance table of `words` against `reference` (a row per answer word),
    or None as soon as every cell of a row is above `limit` (the distance can only grow)."""
    rows = [list(range(len(reference) + 1))]
    for index, word in enumerate(words, 1):
        previous, current = rows[-1], [index]
        for position, wanted in enumerate(reference, 1):
            current.append(
                min(previous[position] + 1, current[-1] + 1, previous[position - 1] + (word != wanted))
            )
        if min(current) > limit:
            return None
        rows.append(current)
    return rows


def _alignment(words: Sequence[str], reference: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """A cheapest alignment of `words` with `reference`, in order: (answer word, reference word)
    pairs, None on the side that lacks the word (an insertion or a deletion). Matches and
    substitutions are preferred over deletions and insertions where the cost is the same."""
    rows = _distance_rows(words, reference, float("inf"))
    assert rows is not None
    pairs: list[tuple[str | None, str | None]] = []
    i, j = len(words), len(reference)
    while i or j:
        if i and j and rows[i][j] == rows[i - 1][j - 1] + (words[i - 1] != reference[j - 1]):
            pairs.append((words[i - 1], reference[j - 1]))
            i, j = i - 1, j - 1
        elif j and rows[i][j] == rows[i][j - 1] + 1:
            pairs.append((None, reference[j - 1]))
            j -= 1
        else:
            pairs.append((words[i - 1], None))
            i -= 1
    return pairs[::-1]


STEM_PREFIX = 4
"""Two words share a stem (one is an inflection of the other: varm/varmt, kaffe/kaffet/kaffets,
dricka/drickar, varmt/varmare) when they begin with the same STEM_PREFIX letters, or when one,
of at least STEM_SHORTEST letters, begins the other (het/hett)."""

STEM_SHORTEST = 3


def same_stem(word: str, other: str) -> bool:
    """Whether two different words look like forms of one word (STEM_PREFIX)."""
    shorter, longer = sorted((word, other), key=len)
    common = len(os.path.commonprefix([word, other]))
    return common >= STEM_PREFIX or (len(shorter) >= STEM_SHORTEST and longer.startswith(shorter))


def _in_order(part: Sequence[str], words: Sequence[str]) -> bool:
    """True when every word of `part` occurs in `words`, in order (others may come between)."""
    remaining = iter(words)
    return all(word in remaining for word in part)


def _word_problems(words: Sequence[str], reference: Sequence[str], references: list[list[str]]) -> list[str]:
    """What makes `words` wrong against `reference`, the accepted translation it is closest to: a
    word in another form of the reference's word at its place, itself no word of any accepted
    translation ("varm" for "varmt"), or a reference word left out, unless some accepted
    translation's words all occur in `words` in order (the answer only adds words: "... dricka
    det"). Other differences (another word, an added word) may be synonyms or paraphrase, and are
    not named."""
    accepted = {word for words in references for word in words}
    adds_only = any(_in_order(other, words) for other in references)
    problems = []
    for said, wanted in _alignment(words, reference):
        if said is None and wanted is not None and not adds_only:
            problems.append(f"missing {wanted!r}")
        elif said and wanted and said != wanted and said not in accepted and same_stem(said, wanted):
            problems.append(f"wrong form {said!r} where an accepted translation has {wanted!r}")
    return problems


@dataclass(frozen=True)
class _Unit:
    """A part of an answer that may be its translation: a line, a sentence, the text after a
    line's last colon or a quoted span, as words, with where it is in the answer."""

    start: int
    end: int
    words: tuple[str, ...]
    lead_in: bool


def _outside(units: list[_Unit], matches: list[_Unit]) -> list[_Unit]:
    """The units that share no character with any of `matches`."""
    matches = sorted(matches, key=lambda match: match.start)
    starts = [match.start for match in matches]
    furthest = list(itertools.accumulate((match.end for match in matches), max))
    outside = []
    for unit in units:
        before = bisect.bisect_left(starts, unit.end)  # the matches that start before the unit ends
        if not before or furthest[before - 1] <= unit.start:
            outside.append(unit)
    return outside


_NOTE = re.compile(r"\([^()\n]*\)")
_SENTENCE_END = re.compile(r"[.!?]+[\"”»’'*_)]*(?=\s)")
_QUOTED = re.compile(r"(?<!\w)[\"“”„«»‘’']([^\"“”„«»‘’'\n]+)[\"“”„«»‘’'](?!\w)")


def _translation_units(answer: str) -> list[_Unit]:
    """The parts of an answer that may be its translation (_Unit), parenthesised notes such as
    "(Literally: ...)" left out; Markdown emphasis and punctuation are not words."""
    text = _NOTE.sub(lambda note: " " * len(note.group()), answer)
    spans: dict[tuple[int, int], None] = {}
    for line in re.finditer(r"[^\n]+", text):
        start, end = line.span()
        spans[start, end] = None
        colon = line.group().rfind(":")
        if colon >= 0:
            spans[start + colon + 1, end] = None
        sentence = start
        for stop in _SENTENCE_END.finditer(text, start, end):
            spans[sentence, stop.end()] = None
            sentence = stop.end()
        spans[sentence, end] = None
        for quoted in _QUOTED.finditer(text, start, end):
            spans[quoted.span(1)] = None
    units = []
    for start, end in spans:
        if words := words_of(text[start:end]):
            units.append(_Unit(start, end, tuple(words), text[start:end].rstrip(" *_").endswith(":")))
    return units


def translation_references(spec: Mapping[str, Any]) -> list[str]:
    """A translation check's accepted translations: `reference` first, then `references`."""
    return ([spec["reference"]] if "reference" in spec else []) + list(spec.get("references", []))


def _shown(text: str, limit: int = 50) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


MAX_TRANSLATION_CANDIDATES = 100
"""At most this many different parts of one answer are measured against the accepted translations."""

MAX_DISTANCE_CELLS = 400_000
"""The word-distance work one answer may cost (answer words × reference words, summed): parts
whose measuring would go beyond it are not measured."""


def _rate_floor(
    length: int, counts: Counter[str], reference_counts: Counter[str], reference_length: int
) -> float:
    """A lower bound of the word error rate of words (their number and Counter) against a reference:
    the words that cannot be matched, by number and by kind."""
    common = sum((reference_counts & counts).values())
    return (max(length, reference_length) - common) / reference_length


def _closest(candidates: list[tuple[str, ...]], references: list[list[str]]) -> tuple[float, int, int] | None:
    """The lowest word error rate of any candidate against any reference, with the candidate's and
    the reference's index; None when no pair could be measured within MAX_DISTANCE_CELLS. Pairs are
    measured in the order of their lowest possible rate (then of candidates and references), and no
    further once that is not below the best found; of equally close pairs, the first measured."""
    reference_counts = [Counter(reference) for reference in references]
    floors = sorted(
        (_rate_floor(len(words), counts, reference_counts[r], len(reference)), c, r)
        for c, (words, counts) in enumerate(
            (words, Counter(words)) for words in candidates[:MAX_TRANSLATION_CANDIDATES]
        )
        for r, reference in enumerate(references)
    )
    cells = 0
    best: tuple[float, int, int] | None = None
    for floor, c, r in floors:
        if best and floor >= best[0]:
            break
        words, reference = candidates[c], references[r]
        if cells + len(words) * len(reference) > MAX_DISTANCE_CELLS:
            continue
        cells += len(words) * len(reference)
        limit = best[0] * len(reference) if best else float("inf")
        rows = _distance_rows(words, reference, limit)
        if rows is not None and (best is None or rows[-1][-1] / len(reference) < best[0]):
            best = (rows[-1][-1] / len(reference), c, r)
    return best


def _attempts(units: list[_Unit], references: list[list[str]]) -> list[_Unit]:
    """The units that are translation attempts other than an accepted translation: not a lead-in
    ending in a colon, at least half as long as the shortest reference (and 2 words), and more than
    half of their words words of the references. The rest ("Sure!", "Here is the translation:",
    an English gloss) are left aside."""
    accepted = {tuple(words) for words in references}
    vocabulary = {word for words in references for word in words}
    shortest = min(len(words) for words in references)
    return [
        unit
        for unit in units
        if unit.words not in accepted
        and not unit.lead_in
        and len(unit.words) >= max(2, shortest // 2)
        and 2 * sum(word in vocabulary for word in unit.words) > len(unit.words)
    ]


def _check_translation(answer: str, spec: dict[str, Any]) -> Outcome:
    """Passes when a part of the answer is an accepted translation's words and no other part is
    another attempt; fails on a listed wrong form, above the word error rate ceiling, or on a word
    in a wrong form or missing against the closest accepted translation; else needs a judge."""
    texts = translation_references(spec)
    references = [words_of(text) for text in texts]
    accepted = {tuple(words): text for words, text in zip(references, texts)}
    units = _translation_units(answer)
    if not units:
        return FAIL, "empty answer", 0.0
    attempts = _attempts(units, references)
    matches = [unit for unit in units if unit.words in accepted]
    match = matches[0] if matches else None
    attempts = _outside(attempts, matches)
    compared = attempts if match else attempts or units
    candidates = list(dict.fromkeys(unit.words for unit in compared))
    wrong = [
        form
        for form, words in ((form, tuple(words_of(form))) for form in spec.get("wrong", []))
        if any(_find_words(candidate, words) for candidate in candidates)
    ]
    if wrong:
        return FAIL, "contains " + ", ".join(_shown(form) for form in wrong[:4]) + ", listed as wrong", 0.0
    if match and not attempts:
        return PASS, f"matches the accepted translation {_shown(accepted[match.words])}", 1.0
    if match:
        return (
            NEEDS_JUDGE,
            f"matches the accepted translation {_shown(accepted[match.words])} but also offers "
            f"{_shown(' '.join(attempts[0].words))}",
            1.0,
        )
    closest = _closest(candidates, references)
    if closest is None:
        return FAIL, "no part of the answer is short enough to measure against an accepted translation", 0.0
    rate, c, r = closest
    ceiling = spec.get("max_wer", MAX_WORD_ERROR_RATE)
    score = round(max(0.0, 1 - rate), 3)
    measured = (
        f"{_shown(' '.join(candidates[c]))}: word error rate {rate:.2f} against {_shown(texts[r])}, "
        f"fails above {ceiling:g}"
    )
    if rate > ceiling:
        return FAIL, f"{measured}; no accepted translation", score
    problems = _word_problems(candidates[c], references[r], references)
    if problems:
        return FAIL, f"{measured}; " + ", ".join(problems[:3]), score
    return NEEDS_JUDGE, f"{measured}; close to, but not, an accepted translation", score


_CODE_BLOCK = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_LINE = re.compile(r"^(\s|def |class |import |from |return|@|#|[A-Za-z_]\w*\s*=)")


def extract_code(answer: str) -> str | None:
    """The Python code in an answer: its fenced Python blocks that define a function, joined in
    order (a helper's block and the function's block), else its first Python block, else a bare
    `def` and the lines under it."""
    blocks = [(lang.lower(), body) for lang, body in _CODE_BLOCK.findall(answer)]
    python = [body.strip("\n") for lang, body in blocks if lang in ("", "python", "py", "python3")]
    defining = [body for body in python if re.search(r"^\s*def \w+|lambda", body, re.M)]
    if defining:
        return "\n\n".join(defining)
    if python:
        return python[0]
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
    r"^[ \t]*(system|user|assistant)[ \t]*(?::|$)|[.!?](system|user|assistant)[ \t]*$|\A\s*(?i:(system|user|assistant))[ \t]*$",
    re.M,
)
"""A chat template's role header: a line opened by a role name in lower case, as templates write
them ("user", "assistant:"), the prompt ending in one ("...paragraph.assistant"), or any role name
alone on the answer's first line. "Assistant" as a job title under a signature or "User:" in a
dialogue the answer writes is not one."""
_TURN_PAIR = (re.compile(r"^[ \t]*user:", re.I | re.M), re.compile(r"^[ \t]*assistant:", re.I | re.M))
"""A user turn and an assistant turn the answer writes ("User: ...", "Assistant: ..."): a made-up
conversation."""
_ASSISTANT_TURN = re.compile(
    r"<\|start_header_id\|>assistant<\|end_header_id\|>|(?:^[ \t]*|[.!?])assistant[ \t]*$|\A\s*(?i:assistant)[ \t]*$",
    re.M,
)


def answer_body(answer: str) -> str:
    """The answer without a leaked chat template: what follows its last assistant turn marker (a
    line "assistant", the prompt ending in "assistant", the Llama 3 header), template tokens
    replaced by line breaks (what follows an end-of-turn token is not run into the answer's text)."""
    turns = list(_ASSISTANT_TURN.finditer(answer))
    body = answer[turns[-1].end() :] if turns else answer
    return _SPECIAL_TOKEN.sub("\n", body).strip("\n")


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
        name = next(index for index, group in enumerate(role.groups(), 1) if group)
        found.append(
            f"role name {role.group(name)!r} at line {answer.count(chr(10), 0, role.start(name)) + 1}"
        )
    elif all(pattern.search(answer) for pattern in _TURN_PAIR):
        found.append("a user turn and an assistant turn")
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
        "passes when a part of the answer (a line, a sentence, the text after a colon, a quoted span) has "
        "the words of `reference` or one of `references` (normalized: case, accents in NFC, punctuation and "
        "quotes left out) and no other part is another attempt; fails when an attempt contains a form listed "
        f"in `wrong`, when its closest part is further than `max_wer` (default {MAX_WORD_ERROR_RATE}) from "
        "every reference, or when a word is in another form than the closest reference's or missing; "
        "otherwise needs a judge. `threshold` (the old character similarity) is accepted and ignored",
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
