"""Text from files, models, uploads and URLs shown in Streamlit's markdown, made inert."""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; escaping all of it turns off links,
# images (a remote image would be fetched by the viewer's browser), emphasis, code, headings,
# tables, LaTeX ($) and Streamlit's :color[...] and :emoji: directives.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: object) -> str:
    """`text` as a string that Streamlit's markdown shows literally: every ASCII punctuation
    character backslash-escaped, line breaks left as they are."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))
