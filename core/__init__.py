"""All logic of the PEFT dashboard, importable without Streamlit.

Heavy libraries (torch, transformers, llama_cpp) are imported inside the functions and job
processes that need them, never at module import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MISSING = "—"
"""How every page and report shows a value that is missing."""


def setting(name: str, secrets: Mapping[str, Any]) -> str:
    """An operator's setting: from Streamlit secrets (passed in by the pages), else the
    environment; "" when unset."""
    return str(secrets.get(name) or os.environ.get(name) or "").strip()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or "" when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def describe(exc: BaseException) -> str:
    """The exception's type and the first line of its message."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


_LINK_STARTS = re.compile(r"([\\`!\[\]<>])")


def markdown_text(value: object) -> str:
    """`value` as text for a Markdown file we write (a report, a model card): no link syntax,
    image, HTML or code span can start in it, while names such as `t4_r16` stay readable (a
    bare URL may still be shown as a link by GitHub-style renderers). Pages escape more:
    ui.text.escape_markdown."""
    return _LINK_STARTS.sub(r"\\\1", str(value))


def markdown_cell(value: object) -> str:
    """`value` as one line of a Markdown table cell we write: markdown_text, line breaks folded,
    pipes escaped."""
    return " ".join(markdown_text(value).split()).replace("|", "\\|")
