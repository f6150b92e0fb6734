"""Comparing runs: picks, loss curves, metrics against a baseline, config diff, answers side by side.

Everything the Compare page shows is computed here from run folders (core/store/runs.py) and the
evaluation results of core/evaluate/, as plain data; the page only lays it out. File
signatures (path, mtime_ns, size) let a caller cache reads and notice when a file changes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import MISSING, markdown_cell
from core.evaluate.answers import tally, variant_label
from core.evaluate.checks import CHECK_MARKS, FAIL, NEEDS_JUDGE, NOT_RUN, passed_of, stored_verdict
from core.evaluate.ratings import is_rating, rating_applies
from core.store.csv_cells import csv_cell
from core.store.files import FileStamp, file_stamp, finite_number, read_jsonl
from core.store.runs import (
    CONFIG_FILE,
    EVAL_DIR,
    METRICS_FILE,
    RATINGS_FILE,
    STATUS_FILE,
    Run,
)

CURVE_AXES = {"step": "Step", "tokens_seen": "Tokens seen", "elapsed_s": "Time (s)"}
MAX_CURVE_POINTS = 500
MAX_CURVE_RUNS = 10
MAX_MATRIX_COLUMNS = 8
# Not training choices: where an imported run came from and the free-text note.
CONFIG_DIFF_IGNORED = ("imported_from", "origin", "note")
MEMORY_MEASURES = {"cuda_reserved": "GPU reserved", "process_rss": "CPU RSS"}
VERDICT_MARKS = {"better": "🟢", "worse": "🔴"}
UNNAMED_SET = "(unnamed set)"  # eval rows written without a prompt_set


# --- reading, with cache keys -------------------------------------------------------------


def root_signature(root: Path) -> tuple[tuple[str, tuple[FileStamp | None, ...]], ...]:
    """The keys of every folder's config, status and metrics under `root`.

    It changes whenever core.store.runs.list_runs(root) would read something different, so a
    cache of list_runs keyed by it is never stale. An unreadable root signs as empty.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return ()
    return tuple(
        (
            entry.name,
            tuple(file_stamp(Path(entry.path, name)) for name in (CONFIG_FILE, STATUS_FILE, METRICS_FILE)),
        )
        for entry in entries
        if entry.is_dir()
    )


def eval_signature(run_path: Path) -> tuple[FileStamp | None, ...]:
    """The keys of a run's eval/*.jsonl files and of its ratings.json."""
    try:
        results = sorted(
            entry.path for entry in os.scandir(run_path / EVAL_DIR) if entry.name.endswith(".jsonl")
        )
    except OSError:
        results = []
    return (*(file_stamp(Path(path)) for path in results), file_stamp(run_path / RATINGS_FILE))


# --- loss curves ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A run's logged training loss, one point per step in step order.

    When a step was logged twice (a resumed run repeats the steps after its checkpoint),
    the later record wins. Unknown tokens or times are NaN. `skipped` counts lines of
    events.jsonl that were unreadable or had no step or loss; `problem` says why the file
    could not be read at all.
    """

    step: np.ndarray
    loss: np.ndarray
    tokens_seen: np.ndarray
    elapsed_s: np.ndarray
    skipped: int = 0
    problem: str = ""
    eval_step: np.ndarray = field(default_factory=lambda: np.empty(0))
    eval_loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    """The validation loss at each evaluation (runs with a recipe's validation share)."""

    def __len__(self) -> int:
        return len(self.step)


def read_curve(events_path: Path) -> Curve:
    """Read a run's events.jsonl into a Curve; a missing or unreadable file gives an empty one."""
    try:
        records, skipped = read_jsonl(events_path)
    except OSError as exc:
        empty = np.empty(0)
        return Curve(empty, empty, empty, empty, problem=str(exc))  # read_jsonl's FileProblem names the file
    return curve_of(records, skipped)


def curve_of(records: list[dict[str, Any]], skipped: int = 0) -> Curve:
    """The Curve of events.jsonl's records (read_jsonl's): training losses and, from evaluation
    records, validation losses; records with neither a finite step and loss nor a step and eval
    loss are counted as skipped, the last record of a step wins."""
    by_step: dict[float, tuple[float, float, float]] = {}
    evaluated: dict[float, float] = {}
    for record in records:
        step, loss = finite_number(record.get("step")), finite_number(record.get("loss"))
        eval_loss = finite_number(record.get("eval_loss"))
        if step is not None and loss is None and eval_loss is not None:
            evaluated[step] = eval_loss
            continue
        if step is None or loss is None:
            skipped += 1
            continue
        tokens, elapsed = finite_number(record.get("tokens_seen")), finite_number(record.get("elapsed_s"))
        by_step[step] = (
            loss,
            math.nan if tokens is None else tokens,
            math.nan if elapsed is None else elapsed,
        )
    steps = sorted(by_step)
    values = np.array([by_step[step] for step in steps], dtype=float).reshape(-1, 3)
    eval_steps = sorted(evaluated)
    return Curve(
        np.array(steps, dtype=float),
        values[:, 0],
        values[:, 1],
        values[:, 2],
        skipped,
        eval_step=np.array(eval_steps, dtype=float),
        eval_loss=np.array([evaluated[step] for step in eval_steps], dtype=float),
    )


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the start is not pulled to 0.

    smoothed[i] = sum(weight**k * values[i-k]) / sum(weight**k) over k = 0..i, which is what
    TensorBoard computes as `last = last * weight + (1 - weight) * value; last / (1 - weight**(i+1))`.
    `weight` is in [0, 1); 0 returns the values unchanged.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), not {weight}")
    values = np.asarray(values, dtype=float)
    if weight == 0 or len(values) < 2:
        return values.copy()
    return pd.Series(values).ewm(alpha=1 - weight, adjust=True).mean().to_numpy()


def downsample(
    x: np.ndarray, y: np.ndarray, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of a curve, in order, that keep its shape.

    The points are cut into equal buckets; each keeps its lowest and its highest point, so
    spikes survive. The first and the last point are always kept.
    """
    count = len(x)
    if count <= max_points:
        return x, y
    size = math.ceil(count / max(1, (max_points - 2) // 2))
    buckets = math.ceil(count / size)
    padded = np.concatenate([y, np.full(buckets * size - count, y[-1])]).reshape(buckets, size)
    starts = np.arange(buckets) * size
    keep = np.concatenate([starts + padded.argmin(axis=1), starts + padded.argmax(axis=1), [0, count - 1]])
    keep = np.unique(np.minimum(keep, count - 1))
    return x[keep], y[keep]


def curve_points(
    curve: Curve, axis: str, weight: float, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """The (x, smoothed loss) points to plot against `axis` (a CURVE_AXES key).

    Points without an x value are left out; so is the whole curve when a time or token
    axis was never recorded (all zero). Smoothing runs before downsampling.
    """
    x = getattr(curve, axis)
    known = np.isfinite(x)
    if axis != "step" and not np.any(x[known] > 0):
        known[:] = False
    x, loss = x[known], curve.loss[known]
    return downsample(x, smooth(loss, weight), max_points)


def eval_points(curve: Curve, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, validation loss) points to plot against `axis`: an evaluation's tokens or time are
    read off the training curve at its step (an evaluation is logged with the step it follows)."""
    if not len(curve.eval_step):
        return curve.eval_step, curve.eval_loss
    if axis == "step":
        return curve.eval_step, curve.eval_loss
    x = getattr(curve, axis)
    known = np.isfinite(x)
    if not np.any(x[known] > 0):
        return np.empty(0), np.empty(0)
    return np.interp(curve.eval_step, curve.step[known], x[known]), curve.eval_loss


# --- picking runs ---------------------------------------------------------------------------


def selectable_runs(runs: Iterable[Run]) -> list[Run]:
    """The runs that can be compared: every readable one, in the given order."""
    return [run for run in runs if not run.broken]


DEFAULT_PICKS = 10  # more runs than this are picked by hand (or by a link): a rerun stays quick at 1,000 runs


def default_runs(runs: Iterable[Run]) -> list[str]:
    """The runs picked by default: the DEFAULT_PICKS newest completed ones (in the given order,
    newest first from list_runs), imported (seed) runs included."""
    return [run.name for run in runs if not run.broken and run.state == "completed"][:DEFAULT_PICKS]


def default_baseline(runs: Sequence[Run]) -> str | None:
    """The default baseline among the picked runs: of the runs on the base model most of them
    share (deltas against another model say little), one named like a baseline, else the oldest."""
    if not runs:
        return None
    models = Counter(str(run.config.get("base_model")) for run in runs)
    common = max(models, key=lambda model: (models[model], model == str(runs[0].config.get("base_model"))))
    runs = [run for run in runs if str(run.config.get("base_model")) == common]
    named = [run for run in runs if "baseline" in run.name.lower()]
    if named:
        return named[0].name
    return min(runs, key=lambda run: (str(run.status.get("created_at") or ""), run.name)).name


def default_curve_runs(
    names_with_curves: Sequence[str], baseline: str | None, limit: int = MAX_CURVE_RUNS
) -> list[str]:
    """The runs drawn in the curve chart by default: the baseline first, then the others in order, at most `limit`."""
    ordered = ([baseline] if baseline in names_with_curves else []) + [
        n for n in names_with_curves if n != baseline
    ]
    return ordered[:limit]


# --- metrics against a baseline -------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A number of metrics.json shown in the comparison; `better` is "lower", "higher" or None."""

    key: str
    label: str
    better: str | None
    digits: int
    memory: bool = False
    help: str = ""


LAB_MEMORY = "the lab's definition (its notebook, and the seed runs): "
TRAINING_MEMORY = "peak stats reset when training starts: "
METRICS = (
    Metric("train_loss", "Train loss (mean)", "lower", 4),
    Metric("final_loss", "Final loss", "lower", 4),
    Metric(
        "best_eval_loss",
        "Best eval loss",
        "lower",
        4,
        help="the lowest loss on the recipe's held-out rows (runs with a validation share)",
    ),
    Metric("best_eval_step", "Best eval step", None, 0, help="the step of the best eval loss"),
    Metric("train_runtime_s", "Runtime (s)", "lower", 1),
    Metric("tokens_per_s", "Tokens/s", "higher", 1),
    Metric(
        "peak_memory_gb", "Peak memory (GB)", "lower", 3, True, LAB_MEMORY + "the job's peak, never reset"
    ),
    Metric(
        "lora_memory_gb",
        "LoRA memory (GB)",
        "lower",
        3,
        True,
        LAB_MEMORY + "the peak minus the peak before training started",
    ),
    Metric(
        "training_peak_memory_gb",
        "Peak in training (GB)",
        "lower",
        3,
        True,
        TRAINING_MEMORY + "the peak since then",
    ),
    Metric(
        "training_memory_gb",
        "Training memory (GB)",
        "lower",
        3,
        True,
        TRAINING_MEMORY + "the peak since then minus the memory in use at the start",
    ),
    Metric("steps", "Steps", None, 0),
)
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}


def metric_value(run: Run, key: str) -> float | None:
    """The run's value of a METRICS key; steps fall back to the status of an imported run."""
    value = finite_number(run.metrics.get(key))
    if value is None and key == "steps":
        value = finite_number(run.status.get("step")) if run.state == "completed" else None
    return value


def memory_measure(run: Run) -> str | None:
    """What the run's memory figures measure: "GPU reserved", "CPU RSS" or None when unknown."""
    return MEMORY_MEASURES.get(str(run.metrics.get("memory_measure")))


def device_share(run: Run, key: str) -> float | None:
    """A GPU memory metric as % of the device's memory, where the run recorded that memory."""
    value, device = metric_value(run, key), finite_number(run.metrics.get("device_memory_gb"))
    if value is None or not device or device <= 0 or run.metrics.get("memory_measure") != "cuda_reserved":
        return None
    return 100 * value / device


@dataclass(frozen=True)
class Delta:
    """A value against the baseline's.

    `verdict` is one of "baseline", "better", "worse", "same", "changed" (no better
    direction), "missing" (a value is unknown) or "not comparable" (memory measured
    differently: GPU reserved against CPU RSS).
    """

    verdict: str
    difference: float | None = None
    percent: float | None = None

    def text(self, digits: int) -> str:
        """The delta as the tables show it: an arrow, the difference and the relative change."""
        if self.difference is None:
            return {"baseline": "baseline", "not comparable": "not comparable"}.get(self.verdict, MISSING)
        if self.verdict == "same":
            return "= 0"
        arrow = "▲" if self.difference > 0 else "▼"
        percent = "" if self.percent is None else f" ({self.percent:+.1f}%)"
        return f"{arrow} {self.difference:+.{digits}f}{percent}"


def delta(metric: Metric, value: float | None, base: float | None, *, comparable: bool = True) -> Delta:
    """Compare `value` with the baseline's `base`: the difference, % of the base, and which is better.

    Differences below the metric's shown precision count as the same.
    """
    if value is None or base is None:
        return Delta("missing")
    if not comparable:
        return Delta("not comparable")
    difference = value - base
    percent = 100 * difference / abs(base) if base else None
    if abs(difference) < 0.5 * 10**-metric.digits:
        return Delta("same", 0.0, 0.0 if base else None)
    if metric.better is None:
        verdict = "changed"
    else:
        verdict = "better" if (difference < 0) == (metric.better == "lower") else "worse"
    return Delta(verdict, difference, percent)


@dataclass(frozen=True)
class MetricsRow:
    """One run's metrics and their deltas against the baseline."""

    run: str
    measure: str | None
    values: dict[str, float | None]
    deltas: dict[str, Delta]
    peak_share: float | None


def metrics_rows(runs: Sequence[Run], baseline: str | None) -> list[MetricsRow]:
    """A row per run with every METRICS value and its delta against the `baseline` run."""
    base = next((run for run in runs if run.name == baseline), None)
    rows = []
    for run in runs:
        values = {metric.key: metric_value(run, metric.key) for metric in METRICS}
        deltas = {}
        for metric in METRICS:
            if base is None:
                deltas[metric.key] = Delta("missing")
            elif run is base:
                deltas[metric.key] = Delta("baseline")
            else:
                comparable = not metric.memory or memory_measure(run) == memory_measure(base)
                deltas[metric.key] = delta(
                    metric, values[metric.key], metric_value(base, metric.key), comparable=comparable
                )
        rows.append(
            MetricsRow(run.name, memory_measure(run), values, deltas, device_share(run, "peak_memory_gb"))
        )
    return rows


def delta_column(metric: Metric) -> str:
    """The metrics table's column name of a metric's delta."""
    return f"Δ {metric.label}"


def metrics_frame(rows: Sequence[MetricsRow]) -> pd.DataFrame:
    """The metrics table: per run its values and, next to each, the delta marked 🟢 better or 🔴 worse."""
    table: list[dict[str, Any]] = []
    for row in rows:
        cells: dict[str, Any] = {"Run": row.run, "Memory measure": row.measure or MISSING}
        for metric in METRICS:
            change = row.deltas[metric.key]
            mark = VERDICT_MARKS.get(change.verdict)
            cells[metric.label] = row.values[metric.key]
            cells[delta_column(metric)] = (
                f"{mark} {change.text(metric.digits)}" if mark else change.text(metric.digits)
            )
        cells["Peak % of device"] = row.peak_share
        table.append(cells)
    return pd.DataFrame(table)


# --- config diff ----------------------------------------------------------------------------


def _config_text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def config_diff(runs: Sequence[Run]) -> pd.DataFrame:
    """The config fields whose values differ between `runs`: a row per run, a column per field.

    A field a run does not have counts as a difference (shown as "—"); where a run was
    imported from and its note are not compared (CONFIG_DIFF_IGNORED).
    """
    fields = dict.fromkeys(key for run in runs for key in run.config if key not in CONFIG_DIFF_IGNORED)
    texts = {key: [_config_text(run.config.get(key)) for run in runs] for key in fields}
    differing = {key: values for key, values in texts.items() if len(set(values)) > 1}
    return pd.DataFrame(
        differing, index=pd.Index([run.name for run in runs], name="Run"), columns=list(differing)
    )


# --- the prompt x run matrix ----------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One answering model in the matrix: a run's variant (adapter, base, gguf-<file>)."""

    run: str
    variant: str

    @property
    def label(self) -> str:
        """`run · variant`, the variant named as the command line names it."""
        return f"{self.run} · {variant_label(self.variant)}"


@dataclass(frozen=True)
class Cell:
    """One answer: its verdict (core.evaluate.checks.VERDICTS), checks, latency and a person's rating of
    this answer (None and "" when unrated)."""

    answer: str
    verdict: str
    checks: tuple[dict[str, Any], ...]
    latency_s: float | None
    new_tokens: float | None
    rating: int | None
    note: str

    def checks_with(self, verdict: str) -> list[str]:
        """The names of the checks with `verdict`."""
        return [str(check.get("name")) for check in self.checks if stored_verdict(check) == verdict]

    @property
    def failed_checks(self) -> list[str]:
        return self.checks_with(FAIL)


@dataclass(frozen=True)
class PromptRow:
    """One prompt and the answers of every column that answered it."""

    prompt_set: str
    prompt_id: str
    prompt: str
    cells: dict[Column, Cell]

    @property
    def disagrees(self) -> bool:
        """True when the columns that answered differ in verdict (pass, fail, needs a judge; not run
        is left out)."""
        return len({cell.verdict for cell in self.cells.values() if cell.verdict != NOT_RUN}) > 1


@dataclass(frozen=True)
class Matrix:
    """Prompts (rows) by answering columns."""

    columns: tuple[Column, ...]
    prompts: tuple[PromptRow, ...]

    def pass_counts(self) -> dict[Column, tuple[int, int, int]]:
        """Per column: the tally of its answers (passed, need a judge, answered)."""
        return {
            column: tally([row.cells[column].verdict for row in self.prompts if column in row.cells])
            for column in self.columns
        }

    def disagreements(self) -> Matrix:
        """The same matrix with only the prompts whose answers differ in pass/fail."""
        return Matrix(self.columns, tuple(row for row in self.prompts if row.disagrees))


def matrix_columns(results: Mapping[str, Mapping[str, Sequence[dict[str, Any]]]]) -> list[Column]:
    """Every (run, variant) with results, in the given order (load_eval_results lists adapter, GGUF files, base)."""
    return [
        Column(run, variant)
        for run, variants in results.items()
        for variant, rows in variants.items()
        if rows
    ]


def prompt_set_of(row: Mapping[str, Any]) -> str:
    """The prompt set an eval row answered; rows without one (or with a non-text one) share UNNAMED_SET."""
    name = row.get("prompt_set")
    return name if isinstance(name, str) and name else UNNAMED_SET


def prompt_sets(results: Mapping[str, Mapping[str, Sequence[dict[str, Any]]]]) -> list[str]:
    """The prompt sets answered in `results` (as prompt_set_of names them), in order of first appearance."""
    names = (
        prompt_set_of(row) for variants in results.values() for rows in variants.values() for row in rows
    )
    return list(dict.fromkeys(names))


def default_matrix_columns(
    columns: Sequence[Column], baseline: str | None, limit: int = MAX_MATRIX_COLUMNS
) -> list[Column]:
    """The columns shown by default: the baseline's first, then the others in order, at most `limit`."""
    ordered = [c for c in columns if c.run == baseline] + [c for c in columns if c.run != baseline]
    return ordered[:limit]


def build_matrix(
    results: Mapping[str, Mapping[str, Sequence[dict[str, Any]]]],
    ratings: Mapping[str, Mapping[str, Mapping[str, Any]]],
    columns: Sequence[Column],
    prompt_set: str | None,
) -> Matrix:
    """The prompt x column matrix of one prompt set (a name from prompt_sets; None: every set).

    `results` maps run -> variant -> eval rows (core.evaluate.answers.load_eval_results per run),
    `ratings` maps run -> variant -> prompt id -> {"rating", "note", "answer_sha256"}
    (core.evaluate.ratings.load_ratings); a rating given to another answer than the row's is left out.
    Prompts come in the order the results list them.
    """
    prompts: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[Column, Cell]] = {}
    for column in columns:
        rated = ratings.get(column.run, {}).get(column.variant, {})
        for row in results.get(column.run, {}).get(column.variant, ()):
            prompt_id = row.get("prompt_id")
            if not isinstance(prompt_id, str) or (
                prompt_set is not None and prompt_set_of(row) != prompt_set
            ):
                continue
            prompts.setdefault(prompt_id, row)
            listed = row.get("checks")
            checks = (
                tuple(check for check in listed if isinstance(check, dict))
                if isinstance(listed, list)
                else ()
            )
            answer = str(row.get("answer") or "")
            entry = rated.get(prompt_id)
            rating = entry if isinstance(entry, dict) and rating_applies(entry, answer) else {}
            cells.setdefault(prompt_id, {})[column] = Cell(
                answer=answer,
                verdict=stored_verdict(row),
                checks=checks,
                latency_s=finite_number(row.get("latency_s")),
                new_tokens=finite_number(row.get("new_tokens")),
                rating=rating.get("rating") if is_rating(rating.get("rating")) else None,
                note=str(rating.get("note") or ""),
            )
    rows = tuple(
        PromptRow(prompt_set_of(first), prompt_id, str(first.get("prompt") or ""), cells[prompt_id])
        for prompt_id, first in prompts.items()
    )
    return Matrix(tuple(columns), rows)


def cell_summary(cell: Cell | None) -> str:
    """A matrix cell in one short line: the verdict's mark, the checks that failed (or, when none
    failed, that need a judge), latency."""
    if cell is None:
        return MISSING
    named = cell.failed_checks or cell.checks_with(NEEDS_JUDGE)
    names = f" {', '.join(named)}" if named else ""
    latency = f" · {cell.latency_s:.1f} s" if cell.latency_s is not None else ""
    return f"{CHECK_MARKS[cell.verdict]}{names}{latency}"


def matrix_frame(matrix: Matrix) -> pd.DataFrame:
    """The matrix as a table: a row per prompt, a column per answering column, cells as cell_summary."""
    return pd.DataFrame(
        [
            {"Prompt": row.prompt_id, **{c.label: cell_summary(row.cells.get(c)) for c in matrix.columns}}
            for row in matrix.prompts
        ],
        columns=["Prompt", *(c.label for c in matrix.columns)],
    )


def pass_counts_frame(matrix: Matrix) -> pd.DataFrame:
    """Per column: run, variant, prompts passed, prompts that need a judge (not passed), answered,
    and the pass rate in %."""
    return pd.DataFrame(
        [
            {
                "Run": c.run,
                "Variant": variant_label(c.variant),
                "Passed": passed,
                "Needs a judge": judge,
                "Answered": answered,
                "Pass rate (%)": round(100 * passed / answered, 1) if answered else None,
            }
            for c, (passed, judge, answered) in matrix.pass_counts().items()
        ],
        columns=["Run", "Variant", "Passed", "Needs a judge", "Answered", "Pass rate (%)"],
    )


# --- exports --------------------------------------------------------------------------------

ANSWER_COLUMNS = (
    "run",
    "variant",
    "prompt_set",
    "prompt_id",
    "prompt",
    "passed",
    "verdict",
    "failed_checks",
    "latency_s",
    "new_tokens",
    "rating",
    "note",
    "answer",
)


def answers_csv(matrix: Matrix) -> str:
    """Every answer of the matrix as CSV, one row per prompt and column (ANSWER_COLUMNS); text
    cells (prompts, answers, notes, names from eval files) cannot start a formula (csv_cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ANSWER_COLUMNS)
    for row in matrix.prompts:
        for column in matrix.columns:
            cell = row.cells.get(column)
            if cell is None:
                continue
            values = (
                column.run,
                column.variant,
                row.prompt_set,
                row.prompt_id,
                row.prompt,
                None if (passed := passed_of(cell.verdict)) is None else str(passed).lower(),
                cell.verdict,
                ";".join(cell.failed_checks),
                cell.latency_s,
                None if cell.new_tokens is None else int(cell.new_tokens),
                cell.rating,
                cell.note,
                cell.answer,
            )
            writer.writerow([csv_cell(value) for value in values])
    return buffer.getvalue()


def _markdown_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return markdown_cell(value)


def markdown_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A pandas table as a Markdown (GitHub) table; pipes and line breaks in cells are escaped."""
    if index:
        frame = frame.reset_index()
    lines = [
        "| " + " | ".join(_markdown_cell(c) for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    lines += [
        "| " + " | ".join(_markdown_cell(v) for v in values) + " |"
        for values in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def _report_metrics(rows: Sequence[MetricsRow]) -> pd.DataFrame:
    table = []
    for row in rows:
        cells: dict[str, Any] = {"Run": row.run, "Memory": row.measure}
        for metric in METRICS:
            value, change = row.values[metric.key], row.deltas[metric.key]
            text = MISSING if value is None else f"{value:.{metric.digits}f}"
            if change.difference is not None and change.verdict != "same":
                text += f" {change.text(metric.digits)}" + (f" {change.verdict}" if metric.better else "")
            elif change.verdict == "not comparable":
                text += " (not comparable)"
            cells[metric.label] = text
        table.append(cells)
    return pd.DataFrame(table)


def markdown_report(
    rows: Sequence[MetricsRow],
    diff: pd.DataFrame,
    matrix: Matrix | None,
    *,
    baseline: str | None,
    broken: Sequence[Run] = (),
    generated_at: str = "",
) -> str:
    """The comparison as a Markdown document: metrics with deltas (metrics_rows), the config
    diff (config_diff), the check summary of `matrix`, and the runs that could not be read."""
    parts = [
        "# Run comparison",
        f"{len(rows)} run(s){', baseline **' + baseline + '**' if baseline else ''}"
        f"{', generated ' + generated_at if generated_at else ''}.",
        "## Metrics",
        "Against the baseline: lower loss, runtime and memory are better, higher tokens/s is better. "
        "Memory is GPU reserved memory, or the process's resident memory (CPU RSS) for runs on a CPU; "
        "the two are not compared.",
        markdown_table(_report_metrics(rows)),
        "## Config differences",
    ]
    parts.append(
        markdown_table(diff, index=True) if len(diff.columns) else "The runs' configs do not differ."
    )
    parts.append("## Checks")
    if matrix is None or not matrix.prompts:
        parts.append("No evaluation results for these runs.")
    else:
        parts.append(markdown_table(pass_counts_frame(matrix)))
        disagreeing = sum(row.disagrees for row in matrix.prompts)
        parts.append(
            f"### Per prompt ({disagreeing} of {len(matrix.prompts)} prompts with differing results)"
        )
        parts.append(markdown_table(matrix_frame(matrix)))
    if broken:
        parts.append("## Runs that could not be read")
        parts.append(
            "\n".join(
                f"- **{markdown_cell(run.name)}**: {markdown_cell('; '.join(run.problems))}" for run in broken
            )
        )
    return "\n\n".join(parts) + "\n"
