"""The sections of the Compare page: loss curves, cost, benchmarks and the judge, and the answers side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core import MISSING, compare
from core.compare import CURVE_AXES, Curve, Matrix, MetricsRow
from core.evaluate.answers import load_eval_results
from core.evaluate.bench import bench_frame
from core.evaluate.judge import load_judgements
from core.evaluate.ratings import load_ratings
from core.store.files import FileStamp, file_stamp
from core.store.runs import EVAL_DIR, EVENTS_FILE, Run
from ui.answers import answer_cell
from ui.charts import MARGINS, bar_figure, memory_figure, scatter_figure
from ui.text import escape_markdown

COLUMNS_PER_ROW = 4


@st.cache_data(show_spinner=False, max_entries=2000)
def cached_curve(key: FileStamp) -> Curve:
    """A run's events.jsonl as a curve, read again only when the file changes."""
    return compare.read_curve(Path(key[0]))


@st.cache_data(show_spinner=False, max_entries=16)
def cached_evaluations(run_paths: tuple[str, ...], signature: str) -> dict[str, tuple[dict, dict]]:
    """Eval results and ratings of the runs, read again when one of their files changes.

    One cache entry for all picked runs (repr of their compare.eval_signature): one lookup
    instead of hundreds.
    """
    return {path: (load_eval_results(Path(path)), load_ratings(Path(path))) for path in run_paths}


def loss_curves_section(picked: list[Run], baseline: str, colours: dict[str, str]) -> None:
    """Every picked run's loss against step, tokens or time, smoothed; runs without a curve named."""
    names = [run.name for run in picked]
    st.subheader("Loss curves")
    curve_keys = {run.name: file_stamp(run.path / EVENTS_FILE) for run in picked}
    with_curves = [name for name in names if curve_keys[name] is not None]
    without_curves = [name for name in names if curve_keys[name] is None]
    if with_curves:
        axis_column, smoothing_column = st.columns(2)
        axis = axis_column.radio("x axis", list(CURVE_AXES), format_func=CURVE_AXES.get, horizontal=True)
        smoothing = smoothing_column.slider(
            "Smoothing",
            0.0,
            0.99,
            0.6,
            0.01,
            help="TensorBoard's exponential moving average, debiased at the start.",
        )
        charted = with_curves
        if len(with_curves) > compare.MAX_CURVE_RUNS:
            st.info(
                f"{len(with_curves)} picked runs have loss curves; the chart shows {compare.MAX_CURVE_RUNS} of them "
                "at first (more are hard to tell apart). Choose which below."
            )
            charted = st.multiselect(
                "Runs in the chart", with_curves, default=compare.default_curve_runs(with_curves, baseline)
            )
        figure = go.Figure()
        unplotted, skipped, validated = [], [], False
        for name in charted:
            curve = cached_curve(curve_keys[name])
            x, y = compare.curve_points(curve, axis, smoothing)
            if curve.skipped:
                skipped.append(f"{name} ({curve.skipped})")
            if curve.problem:
                st.warning(f"No loss curve for **{name}**: {escape_markdown(curve.problem)}")
            if not len(x):
                unplotted.append(name)
                continue
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    line=dict(color=colours[name], width=3 if name == baseline else 1.5),
                )
            )
            eval_x, eval_y = compare.eval_points(curve, axis)
            if len(eval_x):
                validated = True
                figure.add_trace(
                    go.Scatter(
                        x=eval_x,
                        y=eval_y,
                        mode="lines+markers",
                        name=f"{name} · validation",
                        legendgroup=name,
                        line=dict(color=colours[name], width=2, dash="dash"),
                    )
                )
        if figure.data:
            figure.update_layout(
                xaxis_title=CURVE_AXES[axis],
                yaxis_title="loss (dashed: validation)" if validated else "training loss",
                height=420,
                margin=MARGINS,
                legend=dict(orientation="h", y=-0.2),
            )
            st.plotly_chart(figure, key="curves")
        if unplotted:
            st.info(f"Nothing to draw against {CURVE_AXES[axis].lower()} for {', '.join(unplotted)}.")
        if skipped:
            st.caption(f"Unreadable lines skipped in events.jsonl: {', '.join(skipped)}.")
    if without_curves:
        st.info(
            f"No loss curve for {', '.join(without_curves)}: no steps were logged (imported runs, such as "
            "the lab's, hold final metrics only). They are in the tables and bars below."
        )


def cost_section(
    rows: list[MetricsRow], by_name: dict[str, Run], baseline: str, colours: dict[str, str]
) -> None:
    """Memory, runtime and speed bars, and loss against a cost."""
    names = [row.run for row in rows]
    st.subheader("Cost")
    rss = [row.run for row in rows if row.measure == "CPU RSS"]
    memory = memory_figure(
        rows,
        {name: compare.device_share(by_name[name], "peak_memory_gb") for name in names},
        {name: compare.device_share(by_name[name], "lora_memory_gb") for name in names},
    )
    if memory.data:
        st.plotly_chart(memory, key="memory")
    if rss:
        st.caption(
            f"Hatched: {', '.join(rss)} ran on a CPU; their memory is the process's resident memory (RSS), "
            "not GPU memory."
        )
    if any(row.peak_share is not None for row in rows):
        st.caption("% over a bar: the share of the GPU's memory, where the run recorded it.")
    runtime_column, speed_column = st.columns(2)
    for slot, key, title in (
        (runtime_column, "train_runtime_s", "Runtime (s)"),
        (speed_column, "tokens_per_s", "Tokens/s"),
    ):
        chart = bar_figure(names, [row.values[key] for row in rows], title, colours)
        with slot:
            if chart is None:
                st.caption(f"No run records {title.lower()}.")
            else:
                st.plotly_chart(chart, key=f"bar-{key}")

    cost_column, loss_column = st.columns(2)
    cost_key = cost_column.radio(
        "Cost",
        ["train_runtime_s", "peak_memory_gb"],
        horizontal=True,
        format_func=lambda key: compare.METRIC_BY_KEY[key].label,
    )
    loss_keys = ["final_loss", "train_loss"]
    any_final = any(row.values["final_loss"] is not None for row in rows)
    loss_key = loss_column.radio(
        "Loss",
        loss_keys,
        index=0 if any_final else 1,
        horizontal=True,
        format_func=lambda key: compare.METRIC_BY_KEY[key].label,
        help="Final loss is the last logged step's; imported runs only have the mean.",
    )
    points = [row for row in rows if row.values[cost_key] is not None and row.values[loss_key] is not None]
    if points:
        scatter = scatter_figure(
            points, compare.METRIC_BY_KEY[cost_key], compare.METRIC_BY_KEY[loss_key], baseline, colours
        )
        st.plotly_chart(scatter, key="scatter")
    missing_points = [row.run for row in rows if row not in points]
    if missing_points:
        st.caption(f"Not in the scatter (a value is missing): {', '.join(missing_points)}.")


def answers_section(picked: list[Run], by_name: dict[str, Run], baseline: str) -> Matrix | None:
    """Pass counts, the prompt x answer matrix and one prompt's answers with their ratings; the matrix."""
    st.subheader("Answers")
    results, ratings = {}, {}
    paths = tuple(str(run.path) for run in picked)
    evaluations = cached_evaluations(paths, repr([compare.eval_signature(Path(path)) for path in paths]))
    for run in picked:
        run_results, run_ratings = evaluations[str(run.path)]
        if any(run_results.values()):
            results[run.name], ratings[run.name] = run_results, run_ratings
    matrix = None
    if not results:
        st.info(
            "No evaluation results for the picked runs yet. Evaluate a run on its Run page, or with "
            "`python -m core eval RUN` (its adapter, its GGUF files or the base model)."
        )
    else:
        sets = compare.prompt_sets(results)
        prompt_set = st.selectbox("Prompt set", sets) if len(sets) > 1 else sets[0]
        columns = compare.matrix_columns(results)
        chosen = st.multiselect(
            "Answer columns",
            columns,
            default=compare.default_matrix_columns(columns, baseline),
            format_func=lambda column: column.label,
            help="One column per run and variant.",
        )
        matrix = compare.build_matrix(results, ratings, chosen, prompt_set)
        st.dataframe(compare.pass_counts_frame(matrix), hide_index=True)
        only_disagreements = st.toggle(
            "Only prompts where the answers disagree",
            help="Prompts where some columns pass every check and others do not.",
        )
        shown_matrix = matrix.disagreements() if only_disagreements else matrix
        st.dataframe(
            compare.matrix_frame(shown_matrix),
            hide_index=True,
            column_config={"Prompt": st.column_config.Column(pinned=True)},
        )
        if not shown_matrix.prompts:
            st.info(
                "No prompt where the chosen answers disagree."
                if only_disagreements
                else "No answers to show."
            )
        else:
            by_id = {row.prompt_id: row for row in shown_matrix.prompts}
            prompt_id = st.selectbox(
                "Prompt", list(by_id), format_func=lambda pid: f"{pid}: {by_id[pid].prompt}"
            )
            row = by_id[prompt_id]
            st.markdown(f"**{escape_markdown(row.prompt)}**")
            if problem := st.session_state.pop("rating_problem", None):
                st.error(escape_markdown(problem))
            if saved := st.session_state.pop("rating_saved", None):
                st.success(escape_markdown(saved))
            for start in range(0, len(chosen), COLUMNS_PER_ROW):
                for column, slot in zip(
                    chosen[start : start + COLUMNS_PER_ROW],
                    st.columns(min(COLUMNS_PER_ROW, len(chosen))),
                    strict=False,
                ):
                    cell = row.cells.get(column)
                    with slot:
                        answer_cell(by_name[column.run].path, column, row, cell)

    return matrix


def _evaluation_files(picked: list[Run]) -> str:
    """The stamps of the picked runs' benchmark and judgement files: what the cache below is keyed on."""
    stamps = []
    for run in picked:
        folder = run.path / EVAL_DIR
        if folder.is_dir():
            stamps += [file_stamp(path) for path in sorted(folder.glob("*.json"))]
    return repr(stamps)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_benchmarks(runs: tuple[tuple[str, str], ...], baseline: str, signature: str) -> tuple[Any, list]:
    """The benchmark table and the judgements of the runs, read again when one of their files changes."""
    frame = bench_frame([(name, Path(path)) for name, path in runs], baseline)
    return frame, [entry for _, path in runs for entry in load_judgements(Path(path))]


def benchmarks_section(picked: list[Run], baseline: str) -> None:
    """Standard benchmarks (lm-eval) of the picked runs with deltas against the baseline, and the
    pairwise judge's verdicts between picked runs; nothing when none has either."""
    frame, judgements = cached_benchmarks(
        tuple((run.name, str(run.path)) for run in picked), baseline, _evaluation_files(picked)
    )
    names = {run.name for run in picked}
    judgements = [j for j in judgements if j["a"].split(":")[0] in names and j["b"].split(":")[0] in names]
    if frame.empty and not judgements:
        return
    st.subheader("Benchmarks and judge")
    if not frame.empty:
        st.dataframe(
            frame,
            hide_index=True,
            placeholder=MISSING,
            column_config={
                "Score": st.column_config.NumberColumn(format="%.3f"),
                f"Δ vs {baseline}": st.column_config.NumberColumn(format="%+.3f"),
            },
        )
        st.caption(
            "lm-evaluation-harness scores (python -m core bench, or Benchmarks on a run's page). The intervals "
            "are 95% from the harness's standard errors; a Δ interval that spans 0 is no evidence of a difference."
        )
    if judgements:
        st.dataframe(
            [
                {
                    "A": entry["a"],
                    "B": entry["b"],
                    "Judge": entry["judge"],
                    "A wins / ties / B wins": f"{entry['wins']} / {entry['ties']} / {entry['losses']}",
                    "A's win rate": f"{entry['win_rate']:.2f} ({entry['interval'][0]:.2f} to {entry['interval'][1]:.2f})",
                    "Agrees with your ratings": (
                        f"{entry['agreement'][0]} of {entry['agreement'][1]}"
                        if entry["agreement"]
                        else MISSING
                    ),
                }
                for entry in judgements
            ],
            hide_index=True,
        )
        st.caption(
            "python -m core judge: each prompt asked in both orders; a win counts when both orders agree, a tie "
            "counts half. The interval is a 95% bootstrap over prompts."
        )
        for entry in judgements:
            with st.expander(escape_markdown(f"The judge's verdicts: {entry['a']} against {entry['b']}")):
                st.dataframe(entry["prompts"], hide_index=True)
