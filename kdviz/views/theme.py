"""The single colour and type language of kdviz: teacher and student always wear the same colours.

Every view takes its colours, fonts and scales from here, and finishes its figure with `style`.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

TEACHER = "#2563a8"  # blue
STUDENT = "#d9730d"  # orange
NEUTRAL = "#5f6b7a"
MUTED = "#c9ced6"
SHADE = "rgba(95, 107, 122, 0.09)"
HIGHLIGHT = "#111827"
BACKGROUND = "#f7f8fa"
CARD = "#ffffff"
INK = "#1f2933"  # body text
ERROR = "#b42318"  # what a user typed cannot be used
FONT_FAMILY = "Inter, 'Helvetica Neue', Arial, sans-serif"
FONT_SIZE = 13

ROLE_COLOURS = {"teacher": TEACHER, "student": STUDENT}
ASSISTANT = "#6b8fc4"  # a teacher assistant: a lighter teacher blue (it teaches the student)
STUDENT_LIGHT = "#f0a35e"  # a second student beside the first
# Categories that are neither model (classes, loss terms, methods): no teacher blue or student orange among them,
# so a colour never suggests a model it is not about.
CATEGORICAL = ["#2f9e44", "#c92a2a", "#7048e8", "#8d6e63", "#d6336c", "#a9a800", "#15aabf", "#495057", "#087f5b", "#862e9c"]
# Measures of the pair (a divergence per sample, an agreement, a fit score) in neutral ink, never a model's colour:
PAIR_FILL = "#9aa5b1"  # their bars and histograms
PAIR_INK = "#3e4c59"  # their lines and marks (mean, median)
SELECTED = HIGHLIGHT  # the sample, head or layer a user picked: solid and thicker than every other mark
SUGGESTED = "#7048e8"  # what kdviz suggests (a layer map): violet, no model's colour and no divergence red
RULE = "#eef0f3"  # hairlines between table rows
SELECTED_ROW = "#eef4fb"  # the row of the run shown
SHADOW = "0 1px 3px rgba(0,0,0,.12)"  # cards
TRANSPARENT = "rgba(0, 0, 0, 0)"

# Low → high divergence: white to deep red, so text drawn on top stays readable at the low end.
DIVERGENCE_SCALE = [[0.0, "#ffffff"], [0.15, "#fde9c9"], [0.4, "#f9b46b"], [0.7, "#e4572e"], [1.0, "#8c1c13"]]
# Counts, similarities and one model's attention or attribution: white to ink. Neutral, because teacher blue on a
# student's map, or on a measure of the pair, would say "teacher" where it means neither.
SEQUENTIAL_SCALE = [[0.0, "#ffffff"], [0.5, "#9aa5b1"], [1.0, "#1f2933"]]
# Per-head summaries (entropy, distance, …) framing attention thumbnails: a perceptually even dark-to-light scale.
SUMMARY_SCALE = "Viridis"
# Attention drawn over an image: transparent where low, so the image shows through, warm and opaque where high.
OVERLAY_SCALE = [[0.0, "rgba(255, 214, 0, 0)"], [0.35, "rgba(255, 170, 0, 0.3)"], [0.7, "rgba(232, 89, 12, 0.6)"],
                 [1.0, "rgba(165, 0, 38, 0.8)"]]
# Teacher minus student over an image: see-through at 0, student orange / teacher blue where they differ.
def rgba(hex_colour: str, alpha: float) -> str:
    """'#2563a8', 0.5 -> 'rgba(37, 99, 168, 0.5)'."""
    red, green, blue = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


DIFFERENCE_OVERLAY_SCALE = [[0.0, rgba(STUDENT, 0.85)], [0.5, "rgba(255, 255, 255, 0)"], [1.0, rgba(TEACHER, 0.85)]]
# Signed evidence (integrated gradients, input × gradient): purple against the class, red for it, white at 0.
EVIDENCE_AGAINST = "#6a3d9a"
EVIDENCE_FOR = "#b2182b"
SIGNED_SCALE = [[0.0, EVIDENCE_AGAINST], [0.5, "#ffffff"], [1.0, EVIDENCE_FOR]]
SIGNED_OVERLAY_SCALE = [[0.0, rgba(EVIDENCE_AGAINST, 0.85)], [0.5, "rgba(255, 255, 255, 0)"], [1.0, rgba(EVIDENCE_FOR, 0.85)]]
# Input images under an overlay: black ink on white paper.
IMAGE_SCALE = [[0.0, "#ffffff"], [1.0, INK]]
# Teacher minus student: orange where the student is higher, blue where the teacher is higher, white at 0.
DIFFERENCE_SCALE = [[0.0, STUDENT], [0.5, "#ffffff"], [1.0, TEACHER]]


def from_zero(values: object) -> dict:
    """``zmin`` and ``zmax`` of a colour scale anchored at 0 and reaching the largest finite value. Both are set:
    plotly ignores a ``zmin`` given alone and stretches the scale from the data's minimum, so a divergence of 0.43
    would be drawn white, as if it were none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) if len(finite) else 0.0
    return {"zmin": 0.0, "zmax": top if top > 0 else 1.0}


def subtitle(text: str) -> str:
    """A grey second line for a figure title (append it to the title text)."""
    return f"<br><span style='font-size:12px;color:{NEUTRAL}'>{text}</span>"


TITLE_PAD = 20  # px above the title
TITLE_LINE, SUBTITLE_LINE, LEGEND_ROW = 22, 17, 30  # px: a 16 px title line, a 12 px subtitle line, a legend row


def top_margin(title: str, legend: bool) -> int:
    """The top margin that holds the title's lines (the first at 16 px, the rest subtitle lines) and, when shown, a
    legend row between them and the plot."""
    lines = title.count("<br>")
    return TITLE_PAD + TITLE_LINE + SUBTITLE_LINE * lines + (LEGEND_ROW if legend else 0) + 14


def style(fig: go.Figure, title: str, *, height: int = 420, width: int | None = None, legend: bool = True) -> go.Figure:
    """Apply the kdviz look: white template, one font, a left-aligned title, compact margins."""
    use_white_template(fig)
    fig.update_layout(style_layout(title, height=height, width=width, legend=legend))
    return fig.update_layout(xaxis_ticklabelstandoff=4)  # the first x tick label clear of the lowest y tick label


def style_layout(title: str, *, height: int = 420, width: int | None = None, legend: bool = True) -> dict:
    """`style`'s layout as a dict, for a view that builds its whole figure as one dict (validated once, which on a
    large figure is much cheaper than updates); give the figure the template with `use_white_template`."""
    return {
        # the title hangs from the top of the figure and the legend stands on the plot, with the top margin sized
        # to hold both, so a subtitle and a legend never share a line
        "title": {"text": title, "x": 0.01, "xanchor": "left", "y": 1 - TITLE_PAD / height, "yref": "container",
                  "yanchor": "top", "font": {"size": 16}},
        "font": {"family": FONT_FAMILY, "size": FONT_SIZE, "color": INK},
        "height": height,
        "width": width,
        "margin": {"l": 70, "r": 30, "t": top_margin(title, legend), "b": 60},
        "showlegend": legend,
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        "hoverlabel": {"font": {"family": FONT_FAMILY}},
    }


def use_white_template(fig: go.Figure) -> None:
    """Give ``fig`` plotly's "plotly_white" template without validating it again. Assigning a template validates and
    deep-copies every trace default in it (~15 ms a figure, most of a dashboard redraw); the registered template is
    valid already, so this assigns it the way plotly assigns its own default template to a new figure."""
    layout = fig.layout
    layout._validate = False
    try:
        layout.template = pio.templates["plotly_white"]
    finally:
        layout._validate = True


def vline(fig: go.Figure, x: float, line: dict, text: str | None = None, *, side: str = "right",
          yanchor: str = "top") -> None:
    """A vertical line at ``x`` across the plot, labelled at its top on ``side`` ("right" or "left") of the line.
    What ``fig.add_vline`` draws, at a quarter of its cost (it re-examines every subplot for each line)."""
    fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain", line=line)
    if text is not None:
        fig.add_annotation(x=x, xref="x", y=1, yref="y domain", text=text, showarrow=False, yanchor=yanchor,
                           xanchor="left" if side == "right" else "right")


# One colour per class on every page (scatter plots, bars by class): the categorical palette, which holds neither
# role colour, so class 0 is never mistaken for the teacher.
CLASS_COLOURS = CATEGORICAL


def class_colour(index: int) -> str:
    """The colour of class ``index`` on every page (the palette repeats past ten classes)."""
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def marks(fig: go.Figure, items: list[tuple[float, str, dict]]) -> None:
    """Vertical lines at values of a one-plot figure (a mean, a median, the selected sample), each named in the legend
    rather than by text on the plot, where two close values print their labels over each other. ``items``:
    (x, name, line style)."""
    for x, name, line in items:
        fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain", line=line)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line, name=name, hoverinfo="skip"))


def hmarks(fig: go.Figure, items: list[tuple[float, str, dict]]) -> None:
    """Horizontal lines at values of a one-plot figure, each named in the legend (`marks`, turned on its side)."""
    for y, name, line in items:
        fig.add_shape(type="line", y0=y, y1=y, yref="y", x0=0, x1=1, xref="x domain", line=line)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line, name=name, hoverinfo="skip"))
