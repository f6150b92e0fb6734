"""Plotly figures the pages draw: loss curves and bars."""

from __future__ import annotations

import plotly.graph_objects as go

from core.compare import Curve, Metric, MetricsRow, downsample, smooth

MARGINS = {"l": 10, "r": 10, "t": 10, "b": 10}
RSS_PATTERN = "/"  # hatching of bars that measure CPU RSS, not GPU memory
MAX_SCATTER_LABELS = 25  # more run names over the points are unreadable: hover shows them


def run_loss_figure(curve: Curve, weight: float) -> go.Figure:
    """One run's loss, raw and smoothed with `weight` (TensorBoard's debiased moving average), and
    its validation loss where it has one."""
    figure = go.Figure()
    steps, raw = downsample(curve.step, curve.loss)
    figure.add_trace(
        go.Scatter(x=steps, y=raw, mode="lines", name="loss", line={"color": "#9ecae1", "width": 1})
    )
    steps, smoothed = downsample(curve.step, smooth(curve.loss, weight))
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=smoothed,
            mode="lines",
            name=f"smoothed ({weight:.2f})",
            line={"color": "#08519c", "width": 2},
        )
    )
    if len(curve.eval_step):
        figure.add_trace(
            go.Scatter(
                x=curve.eval_step,
                y=curve.eval_loss,
                mode="lines+markers",
                name="validation",
                line={"color": "#e6550d", "width": 2, "dash": "dash"},
            )
        )
    figure.update_layout(
        height=300,
        margin=MARGINS,
        xaxis_title="step",
        yaxis_title="loss" if len(curve.eval_step) else "training loss",
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def bar_figure(
    names: list[str], values: list[float | None], title: str, colours: dict[str, str]
) -> go.Figure | None:
    """One bar per run that has a value; None when none has."""
    known = [(name, value) for name, value in zip(names, values) if value is not None]
    if not known:
        return None
    figure = go.Figure(
        go.Bar(x=[n for n, _ in known], y=[v for _, v in known], marker_color=[colours[n] for n, _ in known])
    )
    figure.update_layout(title=title, height=320, margin={**MARGINS, "t": 40})
    return figure


def memory_figure(
    rows: list[MetricsRow], peak_shares: dict[str, float | None], lora_shares: dict[str, float | None]
) -> go.Figure:
    """Peak and LoRA memory per run, grouped; CPU RSS bars hatched; the share of the device over each bar."""
    figure = go.Figure()
    rss = {row.run for row in rows if row.measure == "CPU RSS"}
    for key, label, shares in (
        ("peak_memory_gb", "Peak memory", peak_shares),
        ("lora_memory_gb", "LoRA memory", lora_shares),
    ):
        known = [row for row in rows if row.values[key] is not None]
        if not known:
            continue
        figure.add_trace(
            go.Bar(
                x=[row.run for row in known],
                y=[row.values[key] for row in known],
                name=label,
                text=[f"{shares[row.run]:.0f}%" if shares.get(row.run) is not None else "" for row in known],
                textposition="outside",
                cliponaxis=False,
                customdata=[row.measure or "unknown measure" for row in known],
                hovertemplate="%{x}<br>%{y:.3f} GB (%{customdata})<br>%{text} of the device<extra>"
                + label
                + "</extra>",
                marker_pattern_shape=[RSS_PATTERN if row.run in rss else "" for row in known],
            )
        )
    figure.update_layout(barmode="group", yaxis_title="GB", height=360, margin={**MARGINS, "t": 30})
    return figure


def scatter_figure(
    points: list[MetricsRow], cost: Metric, loss: Metric, baseline: str, colours: dict[str, str]
) -> go.Figure:
    """Each run's loss against its cost; the baseline a larger star."""
    figure = go.Figure(
        go.Scatter(
            x=[row.values[cost.key] for row in points],
            y=[row.values[loss.key] for row in points],
            mode="markers+text" if len(points) <= MAX_SCATTER_LABELS else "markers",
            text=[row.run for row in points],
            textposition="top center",
            hovertemplate="%{text}<br>%{x}<br>%{y}<extra></extra>",
            marker={
                "size": [16 if row.run == baseline else 11 for row in points],
                "symbol": ["star" if row.run == baseline else "circle" for row in points],
                "color": [colours[row.run] for row in points],
            },
        )
    )
    figure.update_layout(xaxis_title=cost.label, yaxis_title=loss.label, height=400, margin=MARGINS)
    return figure
