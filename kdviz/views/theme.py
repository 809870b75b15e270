"""The single colour and type language of kdviz: teacher and student always wear the same colours.

Every view takes its colours, fonts and scales from here, and finishes its figure with `style`.
"""

from __future__ import annotations

import plotly.graph_objects as go

TEACHER = "#2563a8"  # blue
STUDENT = "#d9730d"  # orange
NEUTRAL = "#5f6b7a"
MUTED = "#c9ced6"
SHADE = "rgba(95, 107, 122, 0.09)"
HIGHLIGHT = "#111827"
BACKGROUND = "#f7f8fa"
CARD = "#ffffff"
FONT_FAMILY = "Inter, 'Helvetica Neue', Arial, sans-serif"
FONT_SIZE = 13

ROLE_COLOURS = {"teacher": TEACHER, "student": STUDENT}

# Low → high divergence: white to deep red, so text drawn on top stays readable at the low end.
DIVERGENCE_SCALE = [[0.0, "#ffffff"], [0.15, "#fde9c9"], [0.4, "#f9b46b"], [0.7, "#e4572e"], [1.0, "#8c1c13"]]
# Counts and similarities: white to teacher blue.
SEQUENTIAL_SCALE = [[0.0, "#ffffff"], [0.5, "#8fb3dd"], [1.0, "#173f6e"]]
# Teacher minus student: orange where the student is higher, blue where the teacher is higher, white at 0.
DIFFERENCE_SCALE = [[0.0, STUDENT], [0.5, "#ffffff"], [1.0, TEACHER]]


def style(fig: go.Figure, title: str, *, height: int = 420, width: int | None = None, legend: bool = True) -> go.Figure:
    """Apply the kdviz look: white template, one font, a left-aligned title, compact margins."""
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        font={"family": FONT_FAMILY, "size": FONT_SIZE, "color": "#1f2933"},
        height=height,
        width=width,
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hoverlabel={"font": {"family": FONT_FAMILY}},
    )
    return fig
