"""CSV cells that no spreadsheet takes for a formula, and back (OWASP's advice on CSV injection).

A text cell that starts with `=`, `+`, `-` or `@` (after leading whitespace), or with a tab, a
carriage return or a single quote, is written with a single quote in front: spreadsheets show
it as text and run nothing. The quote in front of a cell that already starts with one keeps the
change reversible: `restore_cell(neutralise_cell(text)) == text` for every text. Finite numbers
are written as they are (a negative one too), so spreadsheets still read them as numbers.
"""

from __future__ import annotations

from typing import Any

from core.store.files import finite_number

FORMULA_STARTS = ("=", "+", "-", "@")
_QUOTE = "'"
_RAW_STARTS = ("\t", "\r", _QUOTE)


def _needs_quote(text: str) -> bool:
    return text.startswith(_RAW_STARTS) or text.lstrip().startswith(FORMULA_STARTS)


def neutralise_cell(text: str) -> str:
    """`text` as a CSV cell that a spreadsheet shows as text: a quote in front when needed."""
    return _QUOTE + text if _needs_quote(text) else text


def restore_cell(cell: str) -> str:
    """The text that neutralise_cell made `cell` from; any other cell as it is."""
    return cell[1:] if cell.startswith(_QUOTE) and _needs_quote(cell[1:]) else cell


def csv_cell(value: Any) -> str:
    """A value as a CSV cell: "" for None, a finite number as written by Python, anything else
    (text, a boolean, NaN, a value of an unexpected type) as neutralised text."""
    if value is None:
        return ""
    if finite_number(value) is not None:
        return str(value)
    return neutralise_cell(str(value))
