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
from kdviz.views import scales, theme
from kdviz.views.layers import short_name

# pair measures in ink (no model's colour, no class's): loss terms told apart by dash, CKA layers by a light-to-dark
# ramp that follows depth (the deeper the pair, the darker its line)
LOSS_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

# each panel's legend sits inside it, in the corner its curves leave empty: (x, y, xanchor, yanchor) of the panel
CORNERS = {"top right": (0.99, 0.99, "right", "top"), "bottom right": (0.99, 0.03, "right", "bottom")}


def _line(fig: go.Figure, x: np.ndarray, y: np.ndarray, name: str, colour: str, *, panel: int, dash: str | None = None,
          unit: str = "") -> None:
    row, col = divmod(panel, PANEL_COLUMNS)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legend=f"legend{panel + 1}" if panel else "legend",
                             line={"color": colour, "width": 2, "dash": dash}, marker={"size": 6},
                             hovertemplate=f"{escape_label(name)}<br>step %{{x}}: %{{y:.4g}}{unit}<extra></extra>"),
                  row=row + 1, col=col + 1)


PANEL_COLUMNS = 3


def training_curves(data: TrainingData, *, selected_step: int | None = None) -> go.Figure:
    """Against the training step, on the probe set: KL(teacher‖student) and the student's cross-entropy with the
    labels (one chart, nats); top-1 agreement and accuracy; ECE of both models; each recorded loss component; and,
    for feature runs, debiased CKA along the layer map. Each panel has its own legend, inside it. ``selected_step``
    draws a marker line at one step."""
    steps, series = data.steps, data.series
    has_cka = bool(data.cka)
    titles = ["KL to teacher, CE to labels (nats)", "agreement and accuracy", "calibration (ECE, 15 bins)",
              "loss terms (epoch means)"] + (["debiased CKA along the layer map"] if has_cka else [])
    rows = -(-len(titles) // PANEL_COLUMNS)
    fig = make_subplots(rows=rows, cols=PANEL_COLUMNS, subplot_titles=titles, vertical_spacing=0.16, horizontal_spacing=0.07)
    # measures of the pair are drawn in ink, the student's own in student orange, the teacher's in teacher blue
    _line(fig, steps, series["kl"], "KL(teacher ‖ student), T = 1", theme.PAIR_INK, panel=0, unit=" nats")
    if "ce" in series:
        _line(fig, steps, series["ce"], "CE(labels, student)", theme.STUDENT, panel=0, dash="dot", unit=" nats")
    _line(fig, steps, series["agreement"], "top-1 agreement", theme.PAIR_INK, panel=1)
    if "accuracy" in series:
        _line(fig, steps, series["accuracy"], "student accuracy", theme.STUDENT, panel=1, dash="dot")
        _line(fig, steps, series["teacher_accuracy"], "teacher accuracy", theme.TEACHER, panel=1, dash="dash")
    if "ece" in series:
        _line(fig, steps, series["ece"], "student ECE", theme.STUDENT, panel=2)
        _line(fig, steps, series["teacher_ece"], "teacher ECE", theme.TEACHER, panel=2, dash="dash")
    components = [name for name in data.losses if name != "total"]
    if "total" in data.losses:  # the sum the optimiser minimised: solid and darkest; its parts dashed
        _line(fig, steps, data.losses["total"], "loss total", theme.HIGHLIGHT, panel=3)
    for i, name in enumerate(components):
        _line(fig, steps, data.losses[name], f"loss {name}", theme.PAIR_INK, panel=3, dash=LOSS_DASHES[1 + i % 5])
    for (name, values), ink in zip(data.cka.items(), theme.ink_ramp(len(data.cka)), strict=True):
        _line(fig, steps, values, f"CKA {short_name(name, 30)}", ink, panel=4)
    corners = ["top right", "bottom right", "top right", "top right", "bottom right"]
    legends = {}
    for panel in range(len(titles)):
        row, col = divmod(panel, PANEL_COLUMNS)
        suffix = "" if panel == 0 else str(panel + 1)
        x_domain = fig.layout[f"xaxis{suffix}"].domain
        y_domain = fig.layout[f"yaxis{suffix}"].domain
        x, y, xanchor, yanchor = CORNERS[corners[panel]]
        legends["legend" if panel == 0 else f"legend{panel + 1}"] = {
            "x": x_domain[0] + x * (x_domain[1] - x_domain[0]), "y": y_domain[0] + y * (y_domain[1] - y_domain[0]),
            "xanchor": xanchor, "yanchor": yanchor, "orientation": "v", "bgcolor": theme.rgba(theme.CARD, 0.85)}
        fig.update_xaxes(title="step", row=row + 1, col=col + 1)
        if selected_step is not None:
            fig.add_vline(x=selected_step, line={"color": theme.HIGHLIGHT, "width": 1, "dash": "dot"}, row=row + 1, col=col + 1)
    for panel in range(len(titles), rows * PANEL_COLUMNS):  # the grid's empty cells
        row, col = divmod(panel, PANEL_COLUMNS)
        fig.update_xaxes(visible=False, row=row + 1, col=col + 1)
        fig.update_yaxes(visible=False, row=row + 1, col=col + 1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    title = f"How the student moves toward the teacher ({len(steps)} snapshots, probe of {data.run.n_samples:,} samples)"
    theme.style(fig, title + theme.subtitle("dotted line: the step shown on the other pages" if selected_step is not None
                                            else "each panel against the training step"), height=390 * rows, legend=False)
    return fig.update_layout(showlegend=True, **legends)


def teacher_hacking_view(data: TrainingData) -> go.Figure:
    """Log-log plot of the student's distance to the teacher (KL) against its distance to the labels (CE), one point
    per snapshot in step order. Down-and-left is progress; once the path turns upward while KL still falls, matching
    the teacher has stopped helping on the labels ("teacher hacking", Tiapkin et al. 2025)."""
    if "ce" not in data.series or not np.isfinite(data.series["ce"]).any():
        raise MissingDataError("the teacher-hacking view needs labels in the probe set (CE against the labels)")
    kl, ce, steps = data.series["kl"], data.series["ce"], data.steps
    fig = go.Figure(go.Scatter(
        # step labels alternate above-right and below-left of the path, so two close snapshots keep theirs apart
        x=kl, y=ce, mode="lines+markers+text", text=[f"{s}" for s in steps],
        textposition=["top right" if i % 2 == 0 else "bottom left" for i in range(len(steps))],
        textfont={"size": 12, "color": theme.NEUTRAL},
        line={"color": theme.MUTED, "width": 1.5},
        marker={"size": 10, "color": steps, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": "step"},
                "line": {"color": "white", "width": 1}},
        customdata=steps,
        hovertemplate="step %{customdata}<br>KL(teacher‖student) %{x:.4f} nats<br>CE(labels) %{y:.4f} nats<extra></extra>",
    ))
    best = int(np.nanargmin(ce))
    # the note points at the lowest CE from the plot's inside, level with it (the lowest point lies at the bottom and
    # the path runs above it): from the left when the point is in the right half (the x axis is reversed)
    logs = np.log10(kl[np.isfinite(kl) & (kl > 0)])
    right_half = len(logs) > 1 and np.log10(kl[best]) < (logs.min() + logs.max()) / 2
    fig.add_annotation(x=np.log10(kl[best]), y=np.log10(ce[best]), text=f"lowest CE at step {steps[best]}", showarrow=True,
                       arrowhead=2, ax=-240 if right_half else 240, ay=8, font={"color": theme.HIGHLIGHT},
                       bgcolor=theme.rgba(theme.CARD, 0.85))
    fig.update_xaxes(type="log", title="distance to the teacher: KL(teacher ‖ student), nats (log)", autorange="reversed",
                     **scales.log_axis_ticks(kl))
    fig.update_yaxes(type="log", title="distance to the labels: CE, nats (log)", **scales.log_axis_ticks(ce))
    note = theme.subtitle("numbers are steps; the x axis runs right to left, so time moves to the right as the student "
                          "nears the teacher")
    theme.style(fig, "Does matching the teacher still help?" + note, height=480, legend=False)
    return fig.update_layout(margin={"t": 95})
