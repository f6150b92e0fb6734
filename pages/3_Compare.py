"""Compare: picked runs side by side — loss curves, cost, metrics against a baseline, config diff,
answers. The picks are in the URL (`Compare?runs=a,b&baseline=a`), so a comparison can be shared."""

from datetime import UTC, datetime

import streamlit as st
from plotly.colors import qualitative

from core import MISSING, compare
from core.store.paths import runs_root
from core.store.seed import prepare_runs_root
from ui.compare_sections import answers_section, benchmarks_section, cost_section, loss_curves_section
from ui.interop import tensorboard_download
from ui.links import record_choice, synced_choice
from ui.lookups import runs_of
from ui.owner import access_panel
from ui.remote import synced_remote
from ui.text import escape_markdown

PALETTE = qualitative.Plotly  # plotly's default trace colours, one per run


st.set_page_config(page_title="Compare · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
root = runs_root()
synced_remote(root)
st.title("Compare runs")
st.caption(
    "Loss curves, what each run cost, metrics against a baseline, config differences and answers side by side."
)

try:
    prepare_runs_root(root)
except OSError as exc:
    st.error(f"Cannot add the lab's recorded runs to {root}: {escape_markdown(exc)}")
try:
    runs = runs_of(root)
except OSError as exc:
    st.error(f"Cannot read the runs folder {root}: {escape_markdown(exc)}")
    runs = []

broken = [run for run in runs if run.broken]
for run in broken:
    st.warning(
        f"**{escape_markdown(run.name)}** cannot be read and is left out: {escape_markdown('; '.join(run.problems))}"
    )
candidates = compare.selectable_runs(runs)
if not candidates:
    st.info(f"No runs to compare in `{root}`. Train a run, or import an experiments_log.csv on Home.")
    st.stop()

by_name = {run.name: run for run in candidates}
linked = synced_choice(
    "runs",
    "compare_runs",
    lambda value: (
        [name for name in dict.fromkeys((value or "").split(",")) if name in by_name]
        or compare.default_runs(candidates)
    ),
    lambda picks: all(name in by_name for name in picks),
)
unknown = [name for name in dict.fromkeys((linked or "").split(",")) if name and name not in by_name]
if unknown:
    st.warning(f"Not in {root} (left out): {escape_markdown(', '.join(unknown))}.")
picked_names = st.multiselect(
    "Runs",
    list(by_name),
    key="compare_runs",
    help=f"The {compare.DEFAULT_PICKS} newest completed runs are picked at first, the lab's recorded runs "
    "included. The page's address keeps the picks: copy it to share this comparison.",
)
record_choice("runs", "compare_runs", ",".join(picked_names))
picked = [run for run in candidates if run.name in set(picked_names)]
if not picked:
    st.info("Pick at least one run.")
    st.stop()
names = [run.name for run in picked]
synced_choice(
    "baseline",
    "compare_baseline",
    lambda value: value if value in names else compare.default_baseline(picked),
    lambda baseline: baseline in names,
)
baseline = st.selectbox(
    "Baseline", names, key="compare_baseline", help="Deltas in the metrics table are against this run."
)
record_choice("baseline", "compare_baseline", baseline)
colours = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}

loss_curves_section(picked, baseline, colours)

rows = compare.metrics_rows(picked, baseline)
cost_section(rows, by_name, baseline, colours)

st.subheader("Metrics against the baseline")
number_columns = {
    metric.label: st.column_config.NumberColumn(format=f"%.{metric.digits}f", help=metric.help or None)
    for metric in compare.METRICS
}
st.dataframe(
    compare.metrics_frame(rows),
    hide_index=True,
    placeholder=MISSING,
    column_config={
        "Run": st.column_config.Column(pinned=True),
        **number_columns,
        "Peak % of device": st.column_config.NumberColumn(format="%.0f%%"),
    },
)
st.caption(
    f"Against **{baseline}**: ▲/▼ is up or down, 🟢 better and 🔴 worse (lower loss, runtime and memory, "
    "higher tokens/s). CPU RSS memory is not compared with GPU memory."
)

st.subheader("Config differences")
diff = compare.config_diff(picked)
if diff.columns.empty:
    st.caption("The picked runs' configs do not differ.")
else:
    st.dataframe(diff)

benchmarks_section(picked, baseline)
matrix = answers_section(picked, by_name, baseline)

st.subheader("Export")
stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
report_column, answers_column = st.columns(2)
report_column.download_button(
    "Download the comparison (Markdown)",
    compare.markdown_report(rows, diff, matrix, baseline=baseline, broken=broken, generated_at=stamp),
    file_name="comparison.md",
    mime="text/markdown",
)
if matrix is not None:
    answers_column.download_button(
        "Download the answers (CSV)", compare.answers_csv(matrix), file_name="answers.csv", mime="text/csv"
    )
tensorboard_download(lambda: picked, "Prepare TensorBoard logs of the picked runs", "compare_tensorboard")
