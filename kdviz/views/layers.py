"""Layer labels and layer-map overlays shared by the layer-by-layer heatmaps (CKA, attention divergence)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from kdviz.text import escape_label
from kdviz.views import theme


def short_name(name: str, limit: int = 28) -> str:
    """A readable layer label: long dotted paths keep their tail ('…encoder.layer.3.output')."""
    name = escape_label(name)
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def draw_layer_maps(fig: go.Figure, student_names: Sequence[str], teacher_names: Sequence[str], *,
                    layer_map: Sequence[tuple[int, int]] | None = None, suggested: Sequence[tuple[int, int]] | None = None,
                    suggested_label: str = "suggested (best monotone path)") -> None:
    """Outline (student, teacher) layer pairs on a teacher-rows × student-columns heatmap of category axes: the run's
    map as a solid frame around the whole cell, a suggested map as a dashed frame just inside it. Outlines, not
    markers, so the value written in each marked cell stays readable; each map is named in the legend."""
    for pairs, label, inset, line in ((layer_map, "run's layer map", 0.47, {"color": theme.HIGHLIGHT, "width": 3}),
                                      (suggested, suggested_label, 0.36,
                                       {"color": theme.SUGGESTED, "width": 2.5, "dash": "dash"})):
        if not pairs:
            continue
        for s, t in pairs:
            fig.add_shape(type="rect", x0=s - inset, x1=s + inset, y0=t - inset, y1=t + inset, xref="x", yref="y",
                          line=line, fillcolor=theme.TRANSPARENT, layer="above")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, hoverinfo="skip",
                                 marker={"symbol": "square-open", "size": 16, "color": line["color"],
                                         "line": {"width": line["width"]}}))
