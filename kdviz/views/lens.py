"""The logit lens of both models side by side over normalised depth (issue 19): how far each layer's read-out is from
the model's own final distribution and from the teacher's, and the depth by which each token's top-1 is settled."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.views import theme

PANELS = ("KL(own final ‖ layer)", "KL(teacher final ‖ layer)", "tokens whose top-1 is settled")


def _band(fig: go.Figure, depth: np.ndarray, values: np.ndarray, role: str, layers: int, col: int, legend: bool) -> None:
    """The median over tokens [L + 1] as a line, the interquartile range as a band behind it."""
    colour = theme.ROLE_COLOURS[role]
    low, mid, high = np.nanpercentile(values, [25, 50, 75], axis=1)
    fig.add_trace(go.Scatter(x=np.r_[depth, depth[::-1]], y=np.r_[high, low[::-1]], fill="toself", mode="none",
                             fillcolor=theme.rgba(colour, 0.16), hoverinfo="skip", showlegend=False), row=1, col=col)
    fig.add_trace(go.Scatter(
        x=depth, y=mid, mode="lines+markers", name=role, legendgroup=role, showlegend=legend,
        line={"color": colour, "width": 2.5}, marker={"size": 7}, customdata=np.c_[np.arange(layers + 1), low, high],
        hovertemplate=(f"{role}, layer %{{customdata[0]}} of {layers}<br>median %{{y:.3f}} nats"
                       "<br>quartiles %{customdata[1]:.3f} – %{customdata[2]:.3f}<extra></extra>")), row=1, col=col)


def _settled(fig: go.Figure, lens: Any, role: str) -> float:
    """The share of tokens whose top-1 no longer changes from each depth on (a step line); returns the median
    commit depth."""
    colour = theme.ROLE_COLOURS[role]
    share = np.array([(lens.commit_layer <= layer).mean() for layer in range(lens.layers + 1)])
    fig.add_trace(go.Scatter(
        x=lens.depth, y=share, mode="lines+markers", line={"color": colour, "width": 2.5, "shape": "hv"},
        marker={"size": 7}, name=role, legendgroup=role, showlegend=False, customdata=np.arange(lens.layers + 1),
        hovertemplate=f"{role}, layer %{{customdata}} of {lens.layers}: %{{y:.0%}} of tokens settled<extra></extra>"),
        row=1, col=3)
    return float(np.median(lens.commit_depth))


def logit_lens_view(lens: Any) -> go.Figure:
    """Three panels over normalised depth (0: the embeddings, 1: the last block), teacher in blue and student in
    orange: each model's KL from its own final distribution to its layer's read-out, the same from the teacher's
    final distribution, and the share of tokens whose top-1 is settled (commit depth). ``lens``: `lens.LogitLens`.
    A student whose curves reach the teacher's final only in its last layer has no depth to spare."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=PANELS, horizontal_spacing=0.08)
    for legend, model in ((True, lens.teacher), (True, lens.student)):
        _band(fig, model.depth, model.kl_to_own_final, model.role, model.layers, 1, legend)
        _band(fig, model.depth, model.kl_to_teacher_final, model.role, model.layers, 2, False)
    medians = {model.role: _settled(fig, model, model.role) for model in (lens.teacher, lens.student)}
    final = float(np.median(lens.student.kl_to_teacher_final[-1]))
    detail = (f"{lens.teacher.top1.shape[1]:,} tokens of {len(lens.texts)} texts; line: median over tokens, band: "
              f"quartiles; teacher {lens.teacher.layers} blocks, student {lens.student.layers}<br>"
              f"median commit depth: teacher {medians['teacher']:.2f}, student {medians['student']:.2f}; "
              f"the student's last layer is {final:.3f} nats (median) from the teacher's final")
    fig.update_xaxes(range=[-0.04, 1.04], dtick=0.25)
    fig.update_xaxes(title_text="normalised depth (0: the embeddings, 1: the last block)", row=1, col=2)
    fig.update_yaxes(title_text="nats", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_yaxes(title_text="share of tokens", tickformat=".0%", range=[0, 1.03], row=1, col=3)
    fig = theme.style(fig, "Logit lens: where each model decides" + theme.subtitle(detail), height=440, width=1200)
    return fig.update_layout(margin={"t": 135, "l": 70, "r": 30, "b": 60}, title={"y": 0.955, "yanchor": "top"},
                             legend={"y": 1.12, "yanchor": "bottom", "x": 1.0, "xanchor": "right"})
