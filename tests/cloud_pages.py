"""Every page of the dashboard through Streamlit's AppTest, as Streamlit Community Cloud runs it.

Run by tests/test_community_cloud.py with the python of a fresh venv that holds requirements.txt
only (no torch): `python tests/cloud_pages.py REPORT.json`, from the project folder, with
$PEFT_RUNS_DIR naming a runs folder that does not exist yet. In one process, as the app runs, each
page opened as a server opens it (Home.py the entry point, the page and its URL's query): Home
(which seeds the lab's runs), two completed runs with curves and answers added with the Compare
bench's writer, Train, the Run page of a completed run with an adapter, Compare, Sweeps (no sweep
yet), Arena (no GGUF file yet), Data (as it opens, and measuring data/sample_scored.jsonl with the tokenizer of the model
folder $CLOUD_TOKENIZER names), and Study cards before and after a 3-card deck. Writes what a user sees on each page and the process's memory
(VmRSS, VmHWM) without a card model and with one loaded, as JSON; the test judges it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamlit.testing.v1 import AppTest  # noqa: E402

from bench.compare import write_runs  # noqa: E402
from core.models.gguf import DEFAULT_CONTEXT
from core.models.sources import bundled_path
from core.store.paths import PROJECT_DIR, runs_root
from core.store.runs import ADAPTER_DIR

COMPARE_RUNS = 2
COMPARE_STEPS = 60
DECK_CARDS = 3


def memory_mb() -> dict[str, float]:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in MB (10^6 bytes)."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return {
        name: round(int(fields[name].split()[0]) * 1024 / 1e6, 1) for name in ("VmRSS", "VmHWM")
    }  # /proc: KiB


def seen(app: AppTest) -> dict[str, Any]:
    """What a user sees on a rendered page: exceptions, messages, code, buttons, tables, charts, downloads."""
    return {
        "exceptions": [exception.value for exception in app.exception],
        "infos": [info.value for info in app.info],
        "warnings": [warning.value for warning in app.warning],
        "errors": [error.value for error in app.error],
        "code": [code.value for code in app.code],
        "buttons": {button.label: button.disabled for button in app.button},
        "tables": [
            {
                "columns": [str(c) for c in frame.value.columns],
                "first_column": [str(v) for v in frame.value.iloc[:, 0]] if len(frame.value.columns) else [],
            }
            for frame in app.dataframe
        ],
        "charts": [chart.key for chart in app.get("plotly_chart")],
        "downloads": [button.proto.label for button in app.get("download_button")],
        "titles": [title.value for title in app.title],
        "headings": [markdown.value for markdown in app.markdown if markdown.value.startswith("#")],
        "choices": {box.label: str(box.value) for box in app.selectbox},
        "links": [
            [link.proto.label, link.proto.page, link.proto.query_string] for link in app.get("page_link")
        ],
        "query": dict(app.query_params),
    }


def render(
    page: str = "Home.py", query_params: dict[str, str] | None = None, timeout: float = 120
) -> AppTest:
    """`page` (a path under the project) after its first run, opened as a server opens it: Home.py
    is the entry point, `query_params` the URL's query."""
    app = AppTest.from_file(str(PROJECT_DIR / "Home.py"), default_timeout=timeout)
    if page != "Home.py":
        app.switch_page(page)
    app.query_params.update(query_params or {})
    app.run()
    return app


def study_cards_deck() -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """The Study cards page as it opens, then with a deck of DECK_CARDS cards from the default
    model choice (offline: the bundled model), and the process's memory just before generating."""
    app = render("pages/4_Study_cards.py", timeout=600)
    opened = seen(app)
    before = memory_mb()
    next(box for box in app.text_input if box.label == "Topic").input("the water cycle")
    next(slider for slider in app.slider if slider.label == "Cards").set_value(DECK_CARDS)
    next(button for button in app.button if button.label == "Generate").click().run()
    deck = seen(app)
    deck["model"] = next(box for box in app.selectbox if box.label == "Model").value
    deck["cards"] = (
        [card.front for card in app.session_state["cards"]] if "cards" in app.session_state else []
    )
    return opened, deck, before


def main() -> None:
    report_path = Path(sys.argv[1])
    root = runs_root()
    pages = {"home": seen(render("Home.py"))}
    write_runs(root, COMPARE_RUNS, COMPARE_STEPS)
    (root / "run_000" / ADAPTER_DIR).mkdir()  # a run copied from a GPU machine brings its adapter
    pages["train"] = seen(render("pages/1_Train.py"))
    pages["run"] = seen(render("pages/2_Run.py", {"run": "run_000"}))
    pages["compare"] = seen(render("pages/3_Compare.py"))
    pages["sweeps"] = seen(render("pages/5_Sweeps.py"))
    pages["arena"] = seen(render("pages/6_Arena.py"))  # no GGUF export yet; no adapters without torch
    pages["data"] = seen(render("pages/0_Data.py"))
    tokenizer = os.environ["CLOUD_TOKENIZER"]
    pages["data_measured"] = seen(
        render("pages/0_Data.py", {"source": "data/sample_scored.jsonl", "model": tokenizer})
    )
    pages["study_cards"], pages["study_cards_deck"], without_model = study_cards_deck()
    model = bundled_path()
    report = {
        "pages": pages,
        "memory_mb": {"without_model": without_model, "with_model": memory_mb()},
        "bundled_model": {"file": model.name, "bytes": model.stat().st_size} if model else None,
        "context_tokens": DEFAULT_CONTEXT,
    }
    report_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
