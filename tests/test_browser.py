"""End to end in a real browser: the dashboard as `streamlit run Home.py` serves it, driven by
Playwright in the system's Chromium, the way a person uses it.

- Every page opens by its own URL on a fresh server with the sidebar and wide layout that
  clicking to it from the root gives (Streamlit's pages/ discovery, no st.navigation).
- Home lists the lab's recorded runs.
- Train: out-of-range numbers typed into the form are the app's own errors and start nothing; a bad run name shows its error and creates nothing; two CPU smoke runs of the tiny
  Llama start from the form, train as real jobs and complete with a loss chart on their Run
  page; each is evaluated there.
- A run's link (`Run?run=NAME`) opens that run; Compare's link (`Compare?runs=a,b&baseline=b`)
  restores its picks; Compare shows both runs' loss curves and the prompt x run answer matrix.
- Study cards writes a deck with the bundled model (the Hub cannot be reached here, so the page
  falls back to it and says so), one card is edited in the table, and the CSV and .apkg
  downloads carry the edit.
- Arena: two GGUF runs (the tiny Llama exported to q8_0, and a run whose export is the bundled
  SmolLM2) stream their answers to a typed prompt side by side; a vote lands in the leaderboard
  and in the downloaded preference dataset.

A screenshot of every page lands in test-output/e2e/, with the server's log.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser import launch_chromium, streamlit_server
from conftest import PROJECT_DIR, parse_csv, read_apkg, seed_run_names
from playwright.sync_api import Page, expect, sync_playwright
from test_arena import arena_root

from core.train.config import field_specs

OUTPUT = PROJECT_DIR / "test-output" / "e2e"
PAGES = {
    "": "Home",
    "Data": "Data",
    "Train": "Train",
    "Run": "Run",
    "Compare": "Compare",
    "Study_cards": "Study cards",
    "Sweeps": "Sweeps",
    "Arena": "Arena",
}
"""URL path -> sidebar label of every page, in sidebar order."""
RANK_LABEL, STEPS_LABEL = field_specs()["lora_r"].label, field_specs()["max_steps"].label
TRAINING_TIMEOUT_MS = 240_000  # two tiny CPU runs, one after the other (the machine runs one job at a time)
EDITED_FRONT = "Edited in the browser: what is magma?"


@dataclass(frozen=True)
class App:
    url: str
    runs: Path


def app_environment(folder: Path) -> dict[str, str]:
    return {**os.environ, "PEFT_RUNS_DIR": str(folder / "runs"), "PEFT_CACHE_DIR": str(folder / "cache")}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    """The dashboard on a free loopback port, with its own runs folder and cache."""
    folder = tmp_path_factory.mktemp("e2e")
    with streamlit_server(PROJECT_DIR / "Home.py", app_environment(folder), OUTPUT / "server.log") as url:
        yield App(url, folder / "runs")


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(60_000)
    page = context.new_page()
    yield page
    context.close()


def open_page(page: Page, url: str, link: str | None = None) -> None:
    """The app's root, then a page by its sidebar link."""
    page.goto(url)
    expect(page.get_by_role("heading", name="PEFT Dashboard")).to_be_visible()
    if link:
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()
    settle(page)


def sidebar_and_width(page: Page) -> tuple[list[str], float]:
    """The sidebar's page links and the width of the page's main block (wide layout: most of the window)."""
    links = page.locator('[data-testid="stSidebarNav"] a')
    links.first.wait_for()
    width = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()["width"]
    return [(link.text_content() or "").strip() for link in links.all()], width


def settle(page: Page) -> None:
    """Wait for Streamlit to finish the rerun an interaction started."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")


def screenshot(page: Page, name: str) -> None:
    """The whole page: the main area scrolls inside the window, so grow the window to its content first."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(int(height), 1000), 6000)})
    page.wait_for_timeout(500)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def grid_texts(page: Page) -> list[str]:
    """The cells and headers of every table on the page: tables draw on a canvas; their accessible
    copy holds the text."""
    cells = page.locator('[data-testid="stDataFrame"] :is(td[role=gridcell], th[role=columnheader])')
    cells.first.wait_for(state="attached")
    return [cell.text_content() or "" for cell in cells.all()]


def fill(page: Page, label: str, value: str, role: str = "textbox") -> None:
    """Type into a text or number field and commit it (Streamlit takes a value on Enter)."""
    box = page.get_by_role(role, name=label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page)


def run_dirs(root: Path) -> set[str]:
    return {path.name for path in root.iterdir() if path.is_dir()} if root.is_dir() else set()


def start_run(page: Page, name: str) -> None:
    """Name the run in the Train form and start it; the browser moves to the run's own page."""
    fill(page, "Run name", name)
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("heading", name=re.compile(rf" · {name}$"))).to_be_visible()
    assert page.url.endswith(f"/Run?run={name}"), page.url


def wait_completed(page: Page, name: str) -> None:
    expect(page.get_by_role("heading", name=re.compile(rf"completed · {name}$"))).to_be_visible(
        timeout=TRAINING_TIMEOUT_MS
    )
    settle(page)


def evaluate_shown_run(page: Page) -> None:
    """Evaluate the run in view with its adapter on the lab's prompts, as a job; wait for its result."""
    page.get_by_role("button", name="Evaluate", exact=True).click()
    expect(page.get_by_text(re.compile(r"Last evaluation: \S+ completed"))).to_be_visible(
        timeout=TRAINING_TIMEOUT_MS
    )
    settle(page)


def download(page: Page, button: str) -> Path:
    """Click a download button; the downloaded file under its suggested name."""
    with page.expect_download() as started:
        page.get_by_role("button", name=button).click()
    target = Path(started.value.path()).with_name(started.value.suggested_filename)
    started.value.save_as(target)
    return target


def chart_legend(page: Page) -> list[str]:
    """The legend of the page's first chart."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.locator(".legendtext").first.wait_for()
    return [text.text_content() or "" for text in chart.locator(".legendtext").all()]


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_opens_by_its_own_url_on_a_fresh_server(browser, tmp_path: Path, path: str) -> None:
    """The first visit of a fresh server is the page's own URL (a bookmark, a shared link): it shows the
    same sidebar and wide layout as reaching the page from the root by its sidebar link."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        with streamlit_server(
            PROJECT_DIR / "Home.py", app_environment(tmp_path), OUTPUT / f"server-{path}.log"
        ) as url:
            page.goto(f"{url}/{path}")
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            settle(page)
            direct = sidebar_and_width(page)
            title = page.get_by_role("heading", level=1).first.text_content()
            open_page(page, url, PAGES[path] if path else None)
            clicked = sidebar_and_width(page)
            assert page.get_by_role("heading", level=1).first.text_content() == title
    finally:
        context.close()
    assert direct[0] == clicked[0] == list(PAGES.values())
    assert direct[1] == clicked[1] > 1000, "the wide layout on both ways in"


def test_on_a_phone_the_sidebar_closes_once_a_page_is_chosen(playwright, browser, app: App) -> None:
    """On a phone (its screen and user agent) the sidebar opens over the page; choosing a page closes it."""
    context = browser.new_context(**playwright.devices["iPhone 13"])
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        page.goto(app.url)
        expect(page.get_by_role("heading", name="PEFT Dashboard")).to_be_visible()
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.bounding_box()["width"] == 0, "closed at first on a phone"
        page.get_by_test_id("stExpandSidebarButton").click()
        expect(sidebar.get_by_role("link", name="Compare", exact=True)).to_be_visible()
        sidebar.get_by_role("link", name="Compare", exact=True).click()
        expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
        page.wait_for_timeout(1000)
        assert sidebar.bounding_box()["width"] == 0, "closed again once a page is chosen"
    finally:
        context.close()


def test_home_lists_the_lab_runs(page: Page, app: App) -> None:
    open_page(page, app.url)
    expect(page.get_by_text("Runs folder:")).to_be_visible()
    names = {re.sub(r"^.*\?run=", "", cell) for cell in grid_texts(page)}  # each name links to its Run page
    assert set(seed_run_names()) <= names
    screenshot(page, "home")


def test_a_bad_run_name_shows_why_and_creates_nothing(page: Page, app: App) -> None:
    open_page(page, app.url, "Train")
    before = run_dirs(app.runs)
    assert before, "Home seeds the lab's runs on the first visit"

    fill(page, "Run name", "my run!")
    expect(page.get_by_text("Invalid run name 'my run!': it contains ' ', '!'")).to_be_visible()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("Fix the problems marked above; nothing was created.")).to_be_visible()

    taken = seed_run_names()[0]
    fill(page, "Run name", taken)
    expect(page.get_by_text(f"a run named {taken} already exists: pick another name")).to_be_visible()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("Fix the problems marked above; nothing was created.")).to_be_visible()
    screenshot(page, "train-validation")
    assert run_dirs(app.runs) == before
    assert not list(app.runs.glob(".*tmp*")), "no half-written run folder"


def test_out_of_range_numbers_are_refused_by_the_app_and_start_nothing(page: Page, app: App) -> None:
    """The browser would clamp or silently keep a widget's old value; the app takes what is typed,
    says what is wrong under the field, shows no command and starts nothing."""
    open_page(page, app.url, "Train")
    before = run_dirs(app.runs)
    fill(page, RANK_LABEL, "0", role="spinbutton")
    expect(page.get_by_text("must be from 1 to 1024 (got 0)")).to_be_visible()
    fill(page, STEPS_LABEL, "999999999", role="spinbutton")
    expect(page.get_by_text("must be from 1 to 1000000 (got 999999999)")).to_be_visible()
    expect(page.get_by_text("The command appears when every field is valid.")).to_be_visible()
    assert page.locator('[data-testid="stCode"]').count() == 0
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("Fix the problems marked above; nothing was created.")).to_be_visible()
    assert run_dirs(app.runs) == before

    fill(page, RANK_LABEL, "4", role="spinbutton")
    fill(page, STEPS_LABEL, "7", role="spinbutton")
    command = page.locator('[data-testid="stCode"]').first.text_content()
    assert "--set lora_r=4" in command and "--set max_steps=7" in command, command
    screenshot(page, "train")

    for elsewhere in ("Run", "Home"):  # the form as it was left, after a look at another page
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=elsewhere, exact=True).click()
        settle(page)
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Train", exact=True).click()
        settle(page)
        expect(page.get_by_role("spinbutton", name=RANK_LABEL, exact=True)).to_have_value("4")
        expect(page.get_by_role("spinbutton", name=STEPS_LABEL, exact=True)).to_have_value("7")


def test_train_two_cpu_runs_evaluate_them_and_compare(page: Page, app: App) -> None:
    open_page(page, app.url, "Train")
    expect(
        page.get_by_text("Trains the tiny local Llama on the bundled sample")
    ).to_be_visible()  # cpu_smoke preset
    start_run(page, "e2e_r16")
    wait_completed(page, "e2e_r16")
    assert chart_legend(page) == ["loss", "smoothed (0.60)"]
    assert page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace').count() == 2
    evaluate_shown_run(page)
    assert "adapter" in grid_texts(page)
    screenshot(page, "run")

    open_page(page, app.url, "Train")
    fill(page, RANK_LABEL, "4", role="spinbutton")
    start_run(page, "e2e_r4")
    wait_completed(page, "e2e_r4")
    evaluate_shown_run(page)
    assert json.loads((app.runs / "e2e_r4" / "config.json").read_text())["lora_r"] == 4

    page.goto(f"{app.url}/Run?run=e2e_r16")  # a run's shareable link
    expect(page.get_by_role("heading", name=re.compile(r"completed · e2e_r16$"))).to_be_visible()

    open_page(page, app.url, "Compare")
    expect(page.get_by_role("heading", name="Loss curves")).to_be_visible()
    assert {"e2e_r16", "e2e_r4"} <= {label.split(" ")[0] for label in chart_legend(page)}
    expect(page.get_by_role("heading", name="Answers")).to_be_visible()
    cells = "\n".join(grid_texts(page))
    for prompt_id in ("vpn", "swedish", "reverse_string", "ada_lovelace"):
        assert prompt_id in cells
    assert "e2e_r16" in cells and "e2e_r4" in cells
    screenshot(page, "compare")

    page.goto(f"{app.url}/Compare?runs=e2e_r16,e2e_r4&baseline=e2e_r4")  # a comparison's shareable link
    expect(page.get_by_role("heading", name="Loss curves")).to_be_visible()
    settle(page)
    assert sorted(label.split(" ")[0] for label in chart_legend(page)) == ["e2e_r16", "e2e_r4"]
    expect(page.get_by_text("Against e2e_r4:")).to_be_visible()


def test_study_cards_generate_edit_and_download(page: Page, app: App, tmp_path: Path) -> None:
    open_page(page, app.url, "Study cards")
    page.get_by_role("textbox", name="Topic", exact=True).fill("volcanoes")  # Enter would submit the form
    generate = page.get_by_role("button", name="Generate", exact=True)
    generate.click()
    expect(generate).to_be_disabled(timeout=30_000)  # while the deck is written
    expect(page.get_by_role("button", name="Download CSV for Anki")).to_be_visible(timeout=180_000)
    expect(page.get_by_text("using the bundled model instead")).to_be_visible()  # no Hub here
    expect(generate).to_be_enabled()  # enabled again by the rerun that shows the deck
    settle(page)

    editor = page.locator('[data-testid="stDataFrame"]').first
    generated = grid_texts(page)
    page.wait_for_timeout(3000)
    assert grid_texts(page) == generated  # the deck is written once: the rerun does not submit again
    editor.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    box = editor.locator("canvas").first.bounding_box()
    page.mouse.dblclick(
        box["x"] + 80, box["y"] + 35 + 17
    )  # the first row's Front cell (a 35 px header, 35 px rows)
    page.locator("textarea:focus").fill(EDITED_FRONT)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "text => [...document.querySelectorAll('[data-testid=stDataFrame] td[role=gridcell]')]"
        ".some(cell => cell.textContent === text)",
        arg=EDITED_FRONT,
    )
    settle(page)
    screenshot(page, "study-cards")

    for _ in range(20):  # the edit reaches the server in a rerun; the buttons then serve the edited deck
        header, rows = parse_csv(download(page, "Download CSV for Anki").read_text(encoding="utf-8"))
        rows = [[html.unescape(field) for field in row] for row in rows]  # Anki fields are HTML
        if rows and rows[0][0] == EDITED_FRONT:
            break
        page.wait_for_timeout(500)
    assert "#deck:Study cards: volcanoes" in header
    assert len(rows) == 5 and rows[0][0] == EDITED_FRONT
    assert all(front in generated and back in generated for front, back, *_ in rows[1:]), (
        "the other cards as written"
    )

    package_file = download(page, "Download Anki package (.apkg)")
    assert package_file.name == "Study_cards_volcanoes.apkg"
    package = read_apkg(package_file.read_bytes(), tmp_path)
    assert sorted(
        [html.unescape(field) for field in note["fields"][:2]] for note in package["notes"]
    ) == sorted(row[:2] for row in rows)


def test_arena_streams_two_runs_and_a_vote_reaches_the_leaderboard_and_the_export(
    page: Page, app: App, exported_tiny_run: Path
) -> None:
    arena_root(app.runs, exported_tiny_run)
    open_page(page, app.url, "Arena")
    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.fill("What colour is the sky?")
    page.get_by_role("spinbutton", name="New tokens at most").fill("48")  # sent with the form
    page.get_by_role("button", name="Ask").click()
    stats = page.get_by_text(re.compile(r"^(\d|[1-4]\d) tokens · first token \d+\.\d+ s · "))
    expect(stats).to_have_count(2, timeout=120_000)
    settle(page)
    columns = page.locator('[data-testid="stColumn"]').filter(has=stats)
    headers = [columns.nth(i).locator("strong").first.text_content() for i in range(2)]
    assert sorted(headers) == ["smol · gguf:smol-q4_1.gguf", "tiny · gguf:tiny-q8_0.gguf"]
    page.get_by_role("button", name="B is better").click()
    expect(page.get_by_text(re.compile(r"^Stored: B is better"))).to_be_visible()
    settle(page)
    cells = grid_texts(page)
    assert "smol/gguf-smol-q4_1" in cells and "tiny/gguf-tiny-q8_0" in cells
    screenshot(page, "arena")
    (record,) = [
        json.loads(line)
        for line in download(page, "Download the preference dataset (JSONL)").read_text().splitlines()
    ]
    assert record["prompt"] == [{"role": "user", "content": "What colour is the sky?"}]
    (vote,) = [json.loads(line) for line in (app.runs / ".arena" / "votes.jsonl").read_text().splitlines()]
    assert (
        record["chosen"][0]["content"] == vote["b"]["answer"]
        and record["rejected"][0]["content"] == vote["a"]["answer"]
    )
    assert vote["a"]["run"] + " · " in headers[0] and vote["b"]["run"] + " · " in headers[1]
    winner, loser = (f"{vote[side]['run']}/{vote[side]['variant']}" for side in ("b", "a"))
    assert cells.index(winner) < cells.index(loser), "the winner first on the leaderboard"


def test_the_data_page_measures_a_linked_dataset_and_saves_a_recipe(page: Page, app: App) -> None:
    page.goto(f"{app.url}/Data?source=data/sample_scored.jsonl&model=tiny-llama")  # a shared link measures
    expect(page.get_by_text("Median tokens")).to_be_visible(timeout=120_000)
    settle(page)
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
    fill(page, "Min score", "4.5", role="spinbutton")
    fill(page, "Recipe name", "browser-top")
    page.get_by_role("button", name="Save recipe").click()
    settle(page)
    saved = json.loads((app.runs / ".recipes" / "browser-top.json").read_text())
    assert saved["min_score"] == 4.5 and saved["train_count"] > 0
    screenshot(page, "data")
