"""Home, Compare and Sweeps with 1,000 runs of 1,000 logged steps against 10 runs.

Run: .venv/bin/python bench/scale.py [--runs N] [--few N] [--steps N] [--rounds N]. Writes run
folders as training and eval write them (bench/compare.py's writer: config, status, metrics,
events.jsonl, eval/adapter.jsonl) and a sweep record whose members are all the runs of the root
(varied: lora_r and learning_rate, as the writer sets them), into two temporary runs roots. Each
page is rendered with Streamlit's AppTest as a server runs it (Home.py the entry point); a first
render fills the caches, then `--rounds` reruns (a person's click, nothing changed on disk) are
timed, alternating between the sizes so that a busy moment hits both alike. Prints the median
rerun of each page per size and the ratio many / few, both measured in this run. Target: a rerun
under 1 s with 1,000 runs, and a ratio under 3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from bench.compare import write_runs  # noqa: E402
from core.store.paths import PROJECT_DIR, RUNS_DIR_ENV  # noqa: E402
from core.store.runs import list_runs  # noqa: E402
from core.sweeps.definition import new_sweep, write_sweep  # noqa: E402
from core.train.config import default_config  # noqa: E402

PAGES = {
    "Home": ("Home.py", {}),
    "Compare": ("pages/3_Compare.py", {}),
    "Sweeps": ("pages/5_Sweeps.py", {"sweep": "all"}),
}
TARGET_S, TARGET_RATIO = 1.0, 3.0


def write_sweep_of_all(root: Path) -> None:
    """A grid sweep named `all` whose members are every run of `root`."""
    runs = sorted(list_runs(root), key=lambda run: run.name)
    values = [{"lora_r": run.config["lora_r"], "learning_rate": run.config["learning_rate"]} for run in runs]
    axes = {key: sorted({value[key] for value in values}) for key in ("lora_r", "learning_rate")}
    sweep = new_sweep("all", default_config(), preset=None, axes=axes)
    members = [{"run": run.name, "values": value} for run, value in zip(runs, values)]
    write_sweep(root, replace(sweep, members=members))


def open_page(root: Path, page: str, query: dict[str, str]) -> tuple[AppTest, float]:
    """The page rendered once with empty caches; the seconds it took."""
    os.environ[RUNS_DIR_ENV] = str(root)
    st.cache_data.clear()
    app = AppTest.from_file(str(PROJECT_DIR / "Home.py"), default_timeout=600)
    if page != "Home.py":
        app.switch_page(page)
    for key, value in query.items():
        app.query_params[key] = value
    started = time.perf_counter()
    app.run()
    if app.exception:
        raise SystemExit(f"{page} failed: {app.exception[0].value}")
    return app, time.perf_counter() - started


def rerun_s(app: AppTest, root: Path) -> float:
    """Seconds of one rerun of an open page."""
    os.environ[RUNS_DIR_ENV] = str(root)
    started = time.perf_counter()
    app.run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the large root (default 1000)")
    parser.add_argument("--few", type=int, default=10, help="runs in the small root (default 10)")
    parser.add_argument("--steps", type=int, default=1000, help="logged steps per run (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed reruns per page and size (default 5)")
    args = parser.parse_args()
    sizes = (args.few, args.runs)
    with tempfile.TemporaryDirectory() as folder:
        roots = {count: Path(folder) / f"runs-{count}" for count in sizes}
        for count, root in roots.items():
            started = time.perf_counter()
            write_runs(root, count, args.steps)
            write_sweep_of_all(root)
            print(
                f"wrote {count} runs x {args.steps} steps in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        results = {}
        for name, (page, query) in PAGES.items():
            apps = {count: open_page(roots[count], page, query) for count in sizes}
            times: dict[int, list[float]] = {count: [] for count in sizes}
            for _ in range(args.rounds):
                for count in sizes:
                    times[count].append(rerun_s(apps[count][0], roots[count]))
            results[name] = {count: (apps[count][1], statistics.median(times[count])) for count in sizes}
            few, many = results[name][args.few][1], results[name][args.runs][1]
            print(
                f"{name}: rerun median {few:.3f} s with {args.few} runs, {many:.3f} s with {args.runs} runs, "
                f"ratio {many / few:.2f}; first render {results[name][args.few][0]:.2f} s / "
                f"{results[name][args.runs][0]:.2f} s",
                flush=True,
            )
    print(f"\n{os.cpu_count()} CPU cores, {args.rounds} reruns per page and size")
    met = all(
        value[args.runs][1] < TARGET_S and value[args.runs][1] / value[args.few][1] < TARGET_RATIO
        for value in results.values()
    )
    print(
        f"target: a rerun under {TARGET_S:g} s with {args.runs} runs and a ratio under {TARGET_RATIO:g}: "
        + ("met" if met else "NOT met")
    )


if __name__ == "__main__":
    main()
