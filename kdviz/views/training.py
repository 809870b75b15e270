"""Views of distillation over time, from a run's training history (`kdviz.distill`): curves against the step, and
the log-log plot of distance to the teacher against distance to the labels that shows "teacher hacking".

Every view at a single step is the ordinary view of ``run.at_step(step)``. Numbers come from `TrainingData`.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.errors import MissingDataError
from kdviz.readers.training import TrainingData
from kdviz.text import escape_label
from kdviz.views import theme
from kdviz.views.layers import short_name

LOSS_COLOURS = theme.CATEGORICAL  # loss terms are about the pair, not one model


def _line(fig: go.Figure, x: np.ndarray, y: np.ndarray, name: str, colour: str, *, row: int, col: int, dash: str | None = None,
          legendgroup: str | None = None, unit: str = "") -> None:
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=legendgroup or name,
                             line={"color": colour, "width": 2, "dash": dash}, marker={"size": 6},
                             hovertemplate=f"{escape_label(name)}<br>step %{{x}}: %{{y:.4g}}{unit}<extra></extra>"), row=row, col=col)


def training_curves(data: TrainingData, *, selected_step: int | None = None) -> go.Figure:
    """Against the training step, on the probe set: KL(teacher‖student) and the student's cross-entropy with the
    labels (one chart, nats); top-1 agreement and accuracy; ECE of both models; each recorded loss component; and,
    for feature runs, debiased CKA along the layer map. ``selected_step`` draws a marker line at one step."""
    steps, series = data.steps, data.series
    has_cka = bool(data.cka)
    rows = 3 if has_cka else 2
    # short titles: each sits over half the width (the long forms ran into each other)
    titles = ["KL to teacher, CE to labels (nats)", "agreement and accuracy", "calibration (ECE, 15 bins)",
              "loss terms (epoch means)"]
    if has_cka:
        titles.append("debiased CKA along the layer map")
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles, vertical_spacing=0.16 if has_cka else 0.22, horizontal_spacing=0.1)
    # measures of the pair are drawn in ink, the student's own in student orange, the teacher's in teacher blue
    _line(fig, steps, series["kl"], "KL(teacher ‖ student), T = 1", theme.HIGHLIGHT, row=1, col=1, unit=" nats")
    if "ce" in series:
        _line(fig, steps, series["ce"], "CE(labels, student)", theme.STUDENT, row=1, col=1, dash="dot", unit=" nats")
    _line(fig, steps, series["agreement"], "top-1 agreement", theme.HIGHLIGHT, row=1, col=2)
    if "accuracy" in series:
        _line(fig, steps, series["accuracy"], "student accuracy", theme.STUDENT, row=1, col=2, dash="dot")
        _line(fig, steps, series["teacher_accuracy"], "teacher accuracy", theme.MUTED, row=1, col=2, dash="dash")
    if "ece" in series:
        _line(fig, steps, series["ece"], "student ECE", theme.STUDENT, row=2, col=1)
        _line(fig, steps, series["teacher_ece"], "teacher ECE", theme.TEACHER, row=2, col=1, dash="dash")
    for i, (name, values) in enumerate(data.losses.items()):
        _line(fig, steps, values, f"loss {name}", LOSS_COLOURS[i % len(LOSS_COLOURS)], row=2, col=2)
    for i, (name, values) in enumerate(data.cka.items()):
        _line(fig, steps, values, f"CKA {short_name(name, 30)}", LOSS_COLOURS[i % len(LOSS_COLOURS)], row=3, col=1)
    for r in range(1, rows + 1):
        for c in (1, 2):
            fig.update_xaxes(title="step" if r == rows or (r == 2 and not has_cka) else None, row=r, col=c)
            if selected_step is not None:
                fig.add_vline(x=selected_step, line={"color": theme.HIGHLIGHT, "width": 1, "dash": "dot"}, row=r, col=c)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    theme.style(fig, f"How the student moves toward the teacher ({len(steps)} snapshots, probe of {data.run.n_samples:,} samples)",
                height=420 * rows, legend=True)
    return fig.update_layout(legend={"orientation": "v", "x": 1.02, "y": 1, "xanchor": "left", "yanchor": "top"},
                             margin={"r": 220})


def teacher_hacking_view(data: TrainingData) -> go.Figure:
    """Log-log plot of the student's distance to the teacher (KL) against its distance to the labels (CE), one point
    per snapshot in step order. Down-and-left is progress; once the path turns upward while KL still falls, matching
    the teacher has stopped helping on the labels ("teacher hacking", Tiapkin et al. 2025)."""
    if "ce" not in data.series or not np.isfinite(data.series["ce"]).any():
        raise MissingDataError("the teacher-hacking view needs labels in the probe set (CE against the labels)")
    kl, ce, steps = data.series["kl"], data.series["ce"], data.steps
    fig = go.Figure(go.Scatter(
        x=kl, y=ce, mode="lines+markers+text", text=[f"{s}" for s in steps], textposition="top right",
        textfont={"size": 10, "color": theme.NEUTRAL},
        line={"color": theme.MUTED, "width": 1.5},
        marker={"size": 10, "color": steps, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": "step"},
                "line": {"color": "white", "width": 1}},
        customdata=steps,
        hovertemplate="step %{customdata}<br>KL(teacher‖student) %{x:.4f} nats<br>CE(labels) %{y:.4f} nats<extra></extra>",
    ))
    best = int(np.nanargmin(ce))
    fig.add_annotation(x=np.log10(kl[best]), y=np.log10(ce[best]), text=f"lowest CE at step {steps[best]}", showarrow=True,
                       arrowhead=2, ax=40, ay=40, font={"color": theme.HIGHLIGHT})
    fig.update_xaxes(type="log", title="distance to the teacher: KL(teacher ‖ student), nats (log)", autorange="reversed",
                     dtick="D2")
    fig.update_yaxes(type="log", title="distance to the labels: CE, nats (log)", dtick="D2")
    note = theme.subtitle("numbers are steps; the x axis runs right to left, so time moves to the right as the student "
                          "nears the teacher")
    theme.style(fig, "Does matching the teacher still help?" + note, height=480, legend=False)
    return fig.update_layout(margin={"t": 95})
