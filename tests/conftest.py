"""Test settings: one torch thread, no network, and a private runs root per test."""

import os

# With two cores, torch slows down ~100x when anything else is busy: one thread in tests.
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
    os.environ[variable] = "false" if variable == "TOKENIZERS_PARALLELISM" else "1"
# These tests are about CPU behaviour; on a machine with a GPU they must not start CUDA work.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# Nothing may download models or data sets at test time.
for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[variable] = "1"

import base64  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from urllib.parse import parse_qsl  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_core(*args: str, runs_root: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m core --runs-dir ROOT ARGS...` from the project folder, as a user does."""
    return subprocess.run(
        [sys.executable, "-m", "core", "--runs-dir", str(runs_root), *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_smoke_run(name: str, runs_root: Path, max_steps: int = 2) -> Path:
    """Train a CPU smoke run of the tiny Llama to the end with the real command (no warmup); its folder."""
    done = run_core(
        "train",
        name,
        "--preset",
        "cpu_smoke",
        "--set",
        f"max_steps={max_steps}",
        "--set",
        "warmup_steps=0",
        runs_root=runs_root,
    )
    assert done.returncode == 0, done.stderr
    return runs_root / name


def write_conversations(path: Path, conversations: list[list[tuple[str, str]]]) -> Path:
    """Write ShareGPT rows, each conversation given as (from, value) pairs."""
    with path.open("w", encoding="utf-8") as handle:
        for turns in conversations:
            handle.write(json.dumps({"conversations": [{"from": f, "value": v} for f, v in turns]}) + "\n")
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's cache and llama.cpp checkout."""
    monkeypatch.setenv("PEFT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs root that does not exist yet, also set as $PEFT_RUNS_DIR."""
    root = tmp_path / "runs"
    monkeypatch.setenv("PEFT_RUNS_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_model_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama, built once per test session (a few seconds)."""
    from core.train import tiny

    previous = os.environ.get("PEFT_CACHE_DIR")
    os.environ["PEFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("tiny-cache"))
    try:
        return tiny.ensure_tiny_model()
    finally:
        if previous is None:
            del os.environ["PEFT_CACHE_DIR"]
        else:
            os.environ["PEFT_CACHE_DIR"] = previous


@pytest.fixture
def tiny_model(tiny_model_build: Path, private_cache: None) -> Path:
    """The session's tiny model, linked into this test's cache where `tiny-llama` resolves."""
    from core.train import tiny

    target = tiny.tiny_model_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(tiny_model_build, target_is_directory=True)
    return target


MEMORIZE_CONVERSATIONS = [
    [("human", "What colour is the sky?"), ("gpt", "The sky is blue.")],
    [("human", "Name a fruit."), ("gpt", "An apple is a fruit.")],
    [("system", "Answer briefly."), ("human", "What is two plus two?"), ("gpt", "Two plus two is four.")],
    [("human", "Say hello."), ("gpt", "Hello there!"), ("human", "Say bye."), ("gpt", "Goodbye!")],
    [("human", "Where do fish live?"), ("gpt", "Fish live in water.")],
    [("human", "What do cows eat?"), ("gpt", "Cows eat grass.")],
]
"""Six short conversations to memorize, one with a system turn, one with two exchanges."""


@pytest.fixture
def memorize_data(tmp_path: Path) -> Path:
    """MEMORIZE_CONVERSATIONS as a ShareGPT file."""
    return write_conversations(tmp_path / "memorize.jsonl", MEMORIZE_CONVERSATIONS)


@pytest.fixture(scope="session")
def converter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """llama.cpp's converter, fetched by the export's own fetch once per session: pip downloads the
    llama-cpp-python source from the package registry (a package, not a model or data set)."""
    from core.export.converter import fetch_converter

    cache = tmp_path_factory.mktemp("converter-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        patch.delenv("LLAMA_CPP_DIR", raising=False)
        location = fetch_converter(lambda line: None)
    return location.script.parent


@pytest.fixture(scope="session")
def exported_tiny_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path, converter_dir: Path
) -> Path:
    """A run `tiny` of the tiny Llama (4 CPU steps) exported to q8_0 by the real commands, once per
    session; tests copy its folder (gguf/tiny-q8_0.gguf, adapter/) into their own runs root."""
    cache = tmp_path_factory.mktemp("exported-cache")
    root = tmp_path_factory.mktemp("exported") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        patch.setenv("LLAMA_CPP_DIR", str(converter_dir))
        from core.train import tiny

        tiny.tiny_model_dir().parent.mkdir(parents=True)
        tiny.tiny_model_dir().symlink_to(tiny_model_build, target_is_directory=True)
        train_smoke_run("tiny", root, max_steps=4)
        done = run_core("export", "tiny", "--quant", "q8_0", runs_root=root, timeout=600)
    assert done.returncode == 0, done.stderr
    return root / "tiny"


def plain(values):
    """A trace's x or y as a list: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return values


def charts(app) -> dict[str, dict]:
    """The page's plotly figures by key (curves, memory, scatter, bar-...), with x and y as lists."""
    figures = {chart.key: json.loads(chart.proto.spec) for chart in app.get("plotly_chart")}
    for figure in figures.values():
        for trace in figure["data"]:
            trace.update({axis: plain(trace[axis]) for axis in ("x", "y") if axis in trace})
    return figures


HEAVY_MODULES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "llama_cpp",
    "huggingface_hub",
    "datasets",
    "accelerate",
)


def shown(text: str) -> str:
    """A markdown string as the browser shows it: the pages' backslash escapes (ui.text) taken out."""
    return re.sub(r"\\(.)", r"\1", text)


def app_at(page: str = "Home.py", query_params: dict | None = None, timeout: float = 60):
    """An AppTest of the app as a server runs it: Home.py is the entry point and `page` (a path under
    the project such as pages/2_Run.py) the page shown, with the URL's `query_params`. Not yet run."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(PROJECT_DIR / "Home.py"), default_timeout=timeout)
    if page != "Home.py":
        app.switch_page(page)
    for key, value in (query_params or {}).items():
        app.query_params[key] = value
    return app


def rerun(app):
    """Run the AppTest again; the page must not raise."""
    app.run()
    assert not app.exception, app.exception
    return app


def follow(app, label: str):
    """Click the page link `label` as the browser does: its page, with its query as the URL's."""
    link = next(link.proto for link in app.get("page_link") if link.proto.label == label)
    page = next(
        path for path in (PROJECT_DIR / "pages").glob("*.py") if re.sub(r"^\d+_", "", path.stem) == link.page
    )
    app.query_params = dict(parse_qsl(link.query_string))
    app.switch_page(f"pages/{page.name}")
    return rerun(app)


def heavy_modules_after_rendering(page: str, query_params: dict | None = None) -> list[str]:
    """The heavy libraries loaded by rendering `page` (a path under the project) in a fresh process:
    pages must render on an app-only install, so they may import none of them."""
    script = (
        "import sys\n"
        "from conftest import app_at\n"
        f"app = app_at({page!r}, {query_params or {}!r})\n"
        "app.run()\n"
        "assert not app.exception, app.exception\n"
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    environment = {**os.environ, "PYTHONPATH": f"{PROJECT_DIR}{os.pathsep}{PROJECT_DIR / 'tests'}"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [name for name in done.stdout.strip().split(",") if name]


def parse_csv(text: str) -> tuple[list[str], list[list[str]]]:
    """The `#` header lines, and the data rows read with csv."""
    lines = text.splitlines(keepends=True)
    header = [line.rstrip("\n") for line in lines if line.startswith("#")]
    body = "".join(lines[len(header) :])
    return header, list(csv.reader(io.StringIO(body)))


def read_apkg(data: bytes, tmp_path: Path) -> dict:
    """Notes, cards, decks and models of a package, read from a copy of its collection.anki2."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert set(archive.namelist()) == {"collection.anki2", "media"}
        assert json.loads(archive.read("media")) == {}
        db = tmp_path / f"collection-{len(list(tmp_path.glob('collection-*')))}.anki2"
        db.write_bytes(archive.read("collection.anki2"))
    connection = sqlite3.connect(db)
    try:
        notes = [
            {"id": nid, "guid": guid, "mid": mid, "tags": tags.split(), "fields": flds.split("\x1f")}
            for nid, guid, mid, tags, flds in connection.execute(
                "SELECT id, guid, mid, tags, flds FROM notes ORDER BY id"
            )
        ]
        cards = connection.execute("SELECT nid, did, ord FROM cards ORDER BY nid, ord").fetchall()
        decks_json, models_json = connection.execute("SELECT decks, models FROM col").fetchone()
    finally:
        connection.close()
    return {
        "notes": notes,
        "cards": cards,
        "decks": json.loads(decks_json),
        "models": json.loads(models_json),
    }


def seed_run_names() -> list[str]:
    """The lab's recorded runs, in the order of data/seed_runs/experiments_log.csv."""
    from core.store.seed import SEED_LOG

    return [row["run_name"] for row in csv.DictReader(io.StringIO(SEED_LOG.read_text(encoding="utf-8")))]


class StandInBucketApi:
    """huggingface_hub's three bucket calls the store makes, over a local folder (no Hub here)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.calls: list[str] = []

    def list_bucket_tree(self, bucket_id, prefix=None, *, recursive=None, token=None):
        self.calls.append(f"list {bucket_id} {prefix} {token}")
        base = self.folder / bucket_id
        for path in sorted(base.rglob("*")):
            relative = str(path.relative_to(base))
            hidden = any(part.startswith(".") for part in path.relative_to(base).parts)
            if path.is_file() and not hidden and (prefix is None or relative.startswith(prefix + "/")):
                data = path.read_bytes()
                yield SimpleNamespace(type="file", path=relative, size=len(data), xet_hash=str(hash(data)))

    def download_bucket_files(self, bucket_id, files, *, raise_on_missing_files=False, token=None):
        self.calls.append(f"download {bucket_id} {len(files)}")
        for source, target in files:
            shutil.copyfile(self.folder / bucket_id / source, target)

    def batch_bucket_files(self, bucket_id, *, add=None, copy=None, delete=None, token=None):
        self.calls.append(f"batch {bucket_id} {len(add or [])} {token}")
        for source, destination in add or []:
            target = self.folder / bucket_id / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
