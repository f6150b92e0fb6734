"""App cold start: `streamlit run Home.py` until the Home page has rendered in a real browser,
against a bare Streamlit app started and timed the same way.

Run: make bench (or .venv/bin/python bench/startup.py [--rounds N]). Each round starts a fresh
server of each app, one after the other (which goes first alternates), with tests/browser.py's
streamlit_server, and opens it in a new page of a headless Chromium that is already running,
as a user's browser is. The time runs from the server's launch until the text "Runs folder:"
(written by Home.py) is visible; for the baseline, a temporary script holding only
st.title("hello"), until "hello" is; and, to tell our own cost from that of any page with a
table (pandas, pyarrow and the grid), a bare app with a 5-row st.dataframe, until the caption
written after it is. Every start gets private, empty PEFT_RUNS_DIR and
PEFT_CACHE_DIR folders, so the first Home visit also adds the lab's recorded runs, as a user's
first start does. Prints medians and the ratios ours / bare and ours / bare with a table, measured in this run.
Target: ours / bare with a table under 1.25 (our pages, seeding and system checks add little).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import launch_chromium, streamlit_server  # noqa: E402
from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from core.store.paths import CACHE_DIR_ENV, PROJECT_DIR, RUNS_DIR_ENV

HOME_TEXT = "Runs folder:"
BARE_TEXT = "hello"
TABLE_TEXT = "table shown"
TARGET = 1.25
TIMEOUT_S = 120


def seconds_to_text(browser: Browser, script: Path, text: str, folder: Path) -> float:
    """Seconds from launching `streamlit run SCRIPT` (runs and cache in `folder`) until `text`
    shows in a new browser page."""
    env = {
        **os.environ,
        RUNS_DIR_ENV: str(folder / "runs"),
        CACHE_DIR_ENV: str(folder / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    started = time.perf_counter()
    with streamlit_server(script, env, folder / "streamlit.log", timeout=TIMEOUT_S) as url:
        page = browser.new_page()
        try:
            page.goto(url)
            page.get_by_text(text).first.wait_for(timeout=TIMEOUT_S * 1000)
            return time.perf_counter() - started
        finally:
            page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="starts per app, alternating (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        bare_script = Path(folder) / "hello.py"
        bare_script.write_text(f'import streamlit as st\n\nst.title("{BARE_TEXT}")\n')
        table_script = Path(folder) / "table.py"
        table_script.write_text(
            "import pandas as pd\nimport streamlit as st\n\n"
            f'st.title("{BARE_TEXT}")\nst.dataframe(pd.DataFrame({{"run": list("abcde"), "loss": [1.0] * 5}}))\n'
            f'st.caption("{TABLE_TEXT}")\n'
        )
        apps = {
            "ours": (PROJECT_DIR / "Home.py", HOME_TEXT),
            "bare": (bare_script, BARE_TEXT),
            "table": (table_script, TABLE_TEXT),
        }
        times: dict[str, list[float]] = {arm: [] for arm in apps}
        browser = launch_chromium(playwright)
        try:
            for index in range(
                args.rounds
            ):  # alternating, the first app too, so a busy moment hits both alike
                for arm in list(apps) if index % 2 == 0 else list(apps)[::-1]:
                    script, text = apps[arm]
                    times[arm].append(
                        seconds_to_text(browser, script, text, Path(folder) / f"{arm}-{index + 1}")
                    )
                print(f"round {index + 1}: " + ", ".join(f"{arm} {times[arm][-1]:.2f} s" for arm in apps))
        finally:
            browser.close()
    ours, bare, table = (statistics.median(times[arm]) for arm in ("ours", "bare", "table"))
    print(f"\n{args.rounds} starts per app, headless Chromium, {os.cpu_count()} CPU cores")
    print(
        f"launch to text visible, median: Home ({HOME_TEXT!r}) {ours:.2f} s, bare st.title ({BARE_TEXT!r}) "
        f"{bare:.2f} s, bare with a 5-row table ({TABLE_TEXT!r}) {table:.2f} s"
    )
    print(f"ratio ours / bare: {ours / bare:.2f}")
    verdict = "met" if ours / table < TARGET else "NOT met"
    print(f"ratio ours / bare with a table: {ours / table:.2f} (target under {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
