# The two commands: `make run` (install the app, start it) and `make test` (install the
# test requirements, run every test). Both create and reuse .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, before anything that depends on it. On this project's machines the CPU
# wheel of torch 2.13.0 lies on disk and pip takes it; elsewhere PyPI serves the CUDA
# build on Linux: pass TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# for the CPU one.
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# llama-cpp-python builds from source here; without its multimodal part the build takes half
# the time. pip caches the built wheel, so later installs take seconds.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
# Tests use one torch thread: with two cores, torch slows ~100x when anything else is busy.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

.PHONY: run test lint fmt bench gpu-check app-deps dev-deps chromium bubblewrap clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.app-deps: requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) $(TORCH_SPEC)
	$(PIP) -r requirements-dev.txt
	touch $@

app-deps: $(VENV)/.app-deps
dev-deps: $(VENV)/.dev-deps

run: $(VENV)/.app-deps
	$(BIN)/streamlit run Home.py

test: lint chromium bubblewrap
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint and formatting (pyproject.toml): checked before the tests; `make fmt` fixes what it can.
lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(VENV)/.dev-deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The browser tests drive the system's Chromium (Playwright's own browser download does not work
# here): Debian's package, installed where it is missing (as root, else with sudo).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		echo "Installing Debian's chromium for the browser tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# Answer code from code checks runs under bubblewrap (core/evaluate/sandbox.py); without it code
# checks are not run. Debian's package, installed where it is missing (as root, else with sudo).
bubblewrap:
	@command -v bwrap >/dev/null || { \
		echo "Installing Debian's bubblewrap for the code-check sandbox"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq bubblewrap; }

# Benchmarks print ratios against a baseline measured in the same run; not part of the tests.
bench: $(VENV)/.dev-deps chromium bubblewrap
	$(BIN)/python bench/cards.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/imports.py
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/ddp.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/arena.py

# The GPU check (bench/gpu_check.py): on a CUDA machine with requirements-train.txt installed,
# trains T1 for 30 steps with unsloth and with hf, evaluates and exports the unsloth run, and
# writes gpu-check/report.json. Exits 2 where there is no GPU.
gpu-check:
	$(PYTHON) bench/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache test-output gpu-check
