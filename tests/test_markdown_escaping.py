"""Text from run folders, models, uploads and URLs is shown literally: no remote image, no link,
no formatting reaches the browser.

What Streamlit's frontend does with a markdown string is judged here by markdown-it-py (a
CommonMark renderer with GitHub's extensions turned on) on the exact strings the pages hand to
Streamlit: an escaped string renders to its own text and nothing else.
"""

import html
import re

import pytest
from conftest import app_at
from markdown_it import MarkdownIt

from core.store.files import write_json_atomic
from core.store.runs import create_run, initial_status
from core.train.config import default_config
from ui.text import escape_markdown

REMOTE_IMAGE = "![pixel](http://127.0.0.1:9/track.png)"
HOSTILE = [
    REMOTE_IMAGE,
    "[click](javascript:alert(1)) <img src=x onerror=alert(1)>",
    "**bold** _it_ `code` ~~gone~~ # heading",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    ":red[alarm] :material/warning: $x^2$ \\*",
    "http://127.0.0.1:9/autolink and www.example.com",
    "line one\n\n> quoted\n- item",
]
RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough", "linkify"])


def rendered(markdown: str) -> str:
    return RENDERER.render(markdown)


def text_of(markdown_html: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markdown_html))


@pytest.mark.parametrize("payload", HOSTILE)
def test_escaped_text_renders_as_itself(payload):
    page_html = rendered(escape_markdown(payload))
    assert not re.search(r"<(img|a|code|em|strong|s|h\d|table|blockquote|ul|li)\b", page_html), page_html
    # Every character comes through (markdown folds line breaks and the space around them).
    assert " ".join(text_of(page_html).split()) == " ".join(payload.split())


def test_unescaped_the_payload_would_load_a_remote_image():
    """The renderer used here does turn the raw payload into an image: the test above can fail."""
    assert '<img src="http://127.0.0.1:9/track.png"' in rendered(REMOTE_IMAGE)


def markdown_strings(app) -> list[str]:
    """Every markdown string the page handed to Streamlit: text, alerts, captions."""
    return [
        element.value
        for kind in ("markdown", "caption", "error", "warning", "info", "success")
        for element in getattr(app, kind)
    ]


def no_image_or_link(app) -> None:
    """No markdown string of the page renders an image, or a link to the planted address."""
    for markdown in markdown_strings(app):
        page_html = rendered(markdown)
        assert "<img" not in page_html and not re.search(r'(src|href)="[^"]*127\.0\.0\.1', page_html), (
            markdown
        )


@pytest.fixture
def empty_root(runs_root):
    """A runs root without the lab's seed runs."""
    runs_root.mkdir()
    (runs_root / ".seeded").write_text("")
    return runs_root


def rendered_page(page: str, query_params: dict | None = None):
    """The page run once, as a link opens it, with no exception."""
    app = app_at(page, query_params)
    app.run()
    assert not app.exception, app.exception
    return app


def test_a_status_error_from_a_run_folder_is_shown_literally(empty_root):
    """A run folder from elsewhere whose status.json error carries a remote image."""
    path = create_run(empty_root, "planted", default_config(), status=initial_status("failed", 30))
    status = {**initial_status("failed", 30), "error": f"boom {REMOTE_IMAGE}"}
    write_json_atomic(path / "status.json", status)
    app = rendered_page("pages/2_Run.py", {"run": "planted"})
    assert any("track" in error.value for error in app.error)
    no_image_or_link(app)


def test_a_broken_run_named_like_an_image_is_listed_literally(empty_root):
    """A folder name that is no run name (and that markdown would take for an image)."""
    (empty_root / "![x](http:..127.0.0.1:9.png)").mkdir()
    app = rendered_page("Home.py")
    assert any("127" in warning.value for warning in app.warning)
    no_image_or_link(app)


def test_a_name_in_the_url_is_shown_literally(empty_root):
    create_run(empty_root, "real", default_config(), status=initial_status("completed", 30))
    app = rendered_page("pages/3_Compare.py", {"runs": f"real,{REMOTE_IMAGE}"})
    assert any("track" in warning.value for warning in app.warning)
    no_image_or_link(app)
