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
    """Draw (student, teacher) layer pairs over a teacher-rows × student-columns heatmap as open outlines (so the
    value inside each marked cell stays readable): the run's map as squares, a suggested map as circles."""
    for pairs, label, symbol, size, colour in ((layer_map, "run's layer map", "square-open", 40, theme.HIGHLIGHT),
                                               (suggested, suggested_label, "circle-open", 28, theme.STUDENT)):
        if pairs:
            fig.add_trace(go.Scatter(x=[student_names[s] for s, _ in pairs], y=[teacher_names[t] for _, t in pairs],
                                     mode="lines+markers", name=label,
                                     marker={"symbol": symbol, "size": size, "color": colour, "line": {"width": 3}},
                                     line={"color": colour, "width": 1.5, "dash": "dot"}, hoverinfo="skip"))
