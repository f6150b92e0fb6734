"""The Run page's Benchmarks panel: lm-evaluation-harness tasks on a variant of the run, as a job."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.evaluate.bench import (
    DEFAULT_TASKS,
    Z_95,
    BenchError,
    check_bench_request,
    load_bench_results,
    parse_tasks,
)
from core.jobs.lifecycle import start_job
from core.machine.installed import package_version
from core.models.generation import InferenceError
from core.store.runs import MERGED_DIR
from ui.jobs import act, job_panel
from ui.owner import owner_only
from ui.text import escape_markdown


def bench_panel(path: Path, models_here: bool) -> None:
    """Start a benchmark, follow it, and show the scores kept in the run folder."""
    st.markdown("#### Benchmarks")
    st.caption(
        "Standard tasks through lm-evaluation-harness: the tinyBenchmarks (about 100 examples each, made to "
        "estimate MMLU, HellaSwag, ARC and GSM8K) by default, any lm-eval task name, or a task .yaml file. "
        "Base against adapter on **Compare**."
    )
    view = job_panel(path, "bench", "Benchmark")
    if not models_here or not package_version("lm_eval"):
        st.info(
            "Benchmarks need the training stack and lm-eval (pip install -r requirements-train.txt), which this "
            "installation lacks: run python -m core bench where they are and sync the run here."
        )
    else:
        variants = ["adapter", "base", *(["merged"] if (path / MERGED_DIR / "config.json").is_file() else [])]
        columns = st.columns([1, 3, 1])
        variant = columns[0].selectbox("Variant", variants, key="bench_variant")
        tasks = columns[1].text_input("Tasks", ",".join(DEFAULT_TASKS), key="bench_tasks")
        limit = columns[2].number_input(
            "Examples per task", min_value=1, value=None, step=10, key="bench_limit"
        )
        if st.button("Run benchmarks", disabled=view.active, key="bench_start") and owner_only():
            try:
                names = parse_tasks(tasks)
                check_bench_request(path, variant, names)
            except (BenchError, InferenceError) as exc:
                st.error(escape_markdown(exc))
            else:
                arguments = ["--variant", variant, "--tasks", ",".join(names)]
                act(
                    lambda: start_job(
                        path, "bench", arguments + (["--limit", str(int(limit))] if limit else [])
                    )
                )
    results = load_bench_results(path)
    if results:
        st.dataframe(
            [
                {
                    "Variant": variant,
                    "Task": s.task,
                    "Metric": s.metric,
                    "Score": s.value,
                    "± (95%)": None if s.stderr is None else Z_95 * s.stderr,
                    "n": s.n,
                    "Time (s)": s.seconds,
                }
                for variant, scores in results.items()
                for s in scores
            ],
            hide_index=True,
            column_config={
                "Score": st.column_config.NumberColumn(format="%.3f"),
                "± (95%)": st.column_config.NumberColumn(format="%.3f"),
            },
        )
