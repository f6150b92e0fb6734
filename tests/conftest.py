"""Test settings: one torch thread, no network, and a private runs root per test."""

import os

# With two cores, torch slows down ~100x when anything else is busy: one thread in tests.
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
    os.environ[variable] = "false" if variable == "TOKENIZERS_PARALLELISM" else "1"
# Nothing may download models or data sets at test time.
for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[variable] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent.parent


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
