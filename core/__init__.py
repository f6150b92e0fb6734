"""All logic of the PEFT dashboard, importable without Streamlit.

Heavy libraries (torch, transformers, llama_cpp) are imported inside the functions and job
processes that need them, never at module import.
"""

from __future__ import annotations

MISSING = "—"
"""How every page and report shows a value that is missing."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or "" when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def describe(exc: BaseException) -> str:
    """The exception's type and the first line of its message."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
