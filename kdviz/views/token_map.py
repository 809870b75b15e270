"""The token map (issue 19): every token of a language-model run at (teacher entropy, divergence), in four named
regions with their shares of the tokens and of the divergence, coloured by how much of the teacher's mass the two
models' top-k lists share."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from kdviz.metrics import logits as lm
from kdviz.metrics.token_regions import TokenRegions
from kdviz.views import theme

SHORT = {"kl": "KL", "reverse_kl": "reverse KL"}
# where each region's label sits, in paper coordinates of the plot area: (x, y, anchor)
CORNERS = {
    "confident, agreeing": (0.01, 0.02, "left", "bottom"),
    "confident, disagreeing": (0.01, 0.98, "left", "top"),
    "uncertain, agreeing": (0.99, 0.02, "right", "bottom"),
    "uncertain, disagreeing": (0.99, 0.98, "right", "top"),
}


def token_map(entropy: Any, divergence: Any, regions: TokenRegions, *, colour: Any | None = None,
              colour_label: str = "teacher's mass on the shared top-k", measure: str = "kl",
              where: tuple[Any, Any] | None = None, max_points: int = 20_000, seed: int = 0) -> go.Figure:
    """Tokens [M] at (H(p_t), divergence), divergence on a log axis (values below its floor drawn at the floor, as
    the subtitle says), split at ``regions``' lines; ``colour`` [M] in [0, 1] (default: none); ``where`` = (sample
    [M], position [M]) for the hover and for clicks. More than ``max_points`` tokens are drawn as a seeded random
    subset (the shares always count every token)."""
    h, d = np.asarray(entropy, dtype=np.float64).ravel(), np.asarray(divergence, dtype=np.float64).ravel()
    shown = np.arange(len(h))
    if len(h) > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(len(h), max_points, replace=False))
    positive = d[d > 0]
    floor = float(max(np.percentile(positive, 0.5), 1e-6)) if len(positive) else 1e-6
    y = np.maximum(d[shown], floor)
    marker: dict[str, Any] = {"size": 6, "opacity": 0.75, "line": {"width": 0.5, "color": theme.rgba(theme.INK, 0.45)}}
    if colour is not None:
        marker.update(color=np.asarray(colour, dtype=np.float64).ravel()[shown], colorscale=theme.SUMMARY_SCALE,
                      cmin=0, cmax=1, colorbar={"title": {"text": colour_label, "side": "right"}, "len": 0.8,
                                                "tickformat": ".0%"})
    else:
        marker["color"] = theme.NEUTRAL
    customdata = None
    hover = f"H(p_t) %{{x:.3f}} nats<br>{lm.MEASURES[measure]} %{{customdata[0]:.4g}} nats"
    if where is not None:
        sample, position = (np.asarray(a).ravel()[shown] for a in where)
        customdata = np.stack([d[shown], sample, position], axis=1)
        hover += "<br>sample %{customdata[1]:.0f}, token %{customdata[2]:.0f}"
    else:
        customdata = d[shown][:, None]
    if colour is not None:
        hover += "<br>" + colour_label + " %{marker.color:.1%}"
    fig = go.Figure(go.Scattergl(x=h[shown], y=y, mode="markers", marker=marker, customdata=customdata,
                                 hovertemplate=hover + "<extra></extra>", showlegend=False))
    line = {"color": theme.NEUTRAL, "width": 1.5, "dash": "dash"}
    theme.vline(fig, regions.entropy_split, line)
    theme.hline(fig, max(regions.divergence_split, floor), line)
    for name, (x, yy, xanchor, yanchor) in CORNERS.items():
        fig.add_annotation(
            x=x, y=yy, xref="x domain", yref="y domain", xanchor=xanchor, yanchor=yanchor, showarrow=False,
            text=f"<b>{name}</b><br>{regions.token_share[name]:.0%} of tokens · {regions.divergence_share[name]:.0%} "
                 f"of the {SHORT[measure]}", align=xanchor, font={"size": 13, "color": theme.INK},
            bgcolor=theme.rgba(theme.CARD, 0.85))
    fig.update_xaxes(title_text="teacher entropy H(p_t) (nats)", rangemode="tozero")
    # decades as ticks; where the values span less than two decades, which would leave one tick or none, five ticks
    # spaced evenly on the log axis between the smallest and the largest value, at two significant digits
    ticks: dict[str, Any] = {"dtick": 1}
    if len(y) and np.log10(float(y.max()) / float(y.min())) < 2:
        values = np.unique([float(f"{v:.2g}") for v in np.geomspace(float(y.min()), float(y.max()), 5)])
        ticks = {"tickvals": values.tolist(), "ticktext": [f"{v:.2g}" for v in values]}
    fig.update_yaxes(title_text=f"{lm.MEASURES[measure]} (nats, log scale)", type="log", **ticks)
    subset = f"{len(shown):,} of {len(h):,} tokens drawn (a random subset); " if len(shown) < len(h) else ""
    title = ("Which tokens carry the divergence" + theme.subtitle(
        f"{subset}split at H(p_t) = {regions.entropy_split:.3g} and {SHORT[measure]} = {regions.divergence_split:.3g} nats "
        f"(the medians unless set); values below {floor:.1g} drawn at it"))
    return theme.style(fig, title, height=560, legend=False)
