"""The single colour and type language of kdviz: teacher and student always wear the same colours.

Every view takes its colours, fonts and scales from here, and finishes its figure with `style`.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BasePlotlyType

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


def channels(hex_colour: str) -> tuple[int, int, int]:
    """'#2563a8' -> (37, 99, 168)."""
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def ink_ramp(n: int) -> list[str]:
    """``n`` pair inks from `PAIR_FILL` to `INK`, for ordered series of one pair measure (layers by depth)."""
    light, dark = np.array(channels(PAIR_FILL)), np.array(channels(INK))
    return ["#" + "".join(f"{round(float(v)):02x}" for v in light + (dark - light) * (i / max(1, n - 1))) for i in range(n)]


def two_lines(label: str, longest: int = 12) -> str:
    """``label`` broken at the space nearest its middle when longer than ``longest`` characters: category ticks of a
    figure drawn half the page wide stay clear of their neighbours."""
    spaces = [i for i, c in enumerate(label) if c == " "]
    if len(label) <= longest or not spaces:
        return label
    cut = min(spaces, key=lambda i: abs(i - len(label) / 2))
    return label[:cut] + "<br>" + label[cut + 1:]


RULE = "#eef0f3"  # hairlines between table rows
SELECTED_ROW = "#eef4fb"  # the row of the run shown
SHADOW = "0 1px 3px rgba(0,0,0,.12)"  # cards
TRANSPARENT = "rgba(0, 0, 0, 0)"

# Low → high divergence: white to deep red, so text drawn on top stays readable at the low end.
DIVERGENCE_SCALE = [[0.0, "#ffffff"], [0.15, "#fde9c9"], [0.4, "#f9b46b"], [0.7, "#e4572e"], [1.0, "#8c1c13"]]
# Counts, similarities and one model's attention or attribution: white to ink. Neutral, because teacher blue on a
# student's map, or on a measure of the pair, would say "teacher" where it means neither.
SEQUENTIAL_SCALE = [[0.0, "#ffffff"], [0.5, "#9aa5b1"], [1.0, "#1f2933"]]
# A signed similarity (cosine of centred features, −1…1): ink where alike, purple where opposed, white at 0. Not
# red-to-blue: beside a teacher − student map, blue would read "the teacher is higher".
SIGNED_SIMILARITY_SCALE = [[0.0, "#6a3d9a"], [0.5, "#ffffff"], [1.0, "#1f2933"]]
# Per-head summaries (entropy, distance, …) framing attention thumbnails: a perceptually even dark-to-light scale.
SUMMARY_SCALE = "Viridis"


def rgba(hex_colour: str, alpha: float) -> str:
    """'#2563a8', 0.5 -> 'rgba(37, 99, 168, 0.5)'."""
    red, green, blue = channels(hex_colour)
    return f"rgba({red}, {green}, {blue}, {alpha})"


# Signed evidence (integrated gradients, input × gradient): purple against the class, red for it, white at 0.
EVIDENCE_AGAINST = "#6a3d9a"
EVIDENCE_FOR = "#b2182b"
SIGNED_SCALE = [[0.0, EVIDENCE_AGAINST], [0.5, "#ffffff"], [1.0, EVIDENCE_FOR]]
# An input image under a map: its outline, an ink contour over a white halo (visible on light and dark cells).
OUTLINE_LINES = ({"color": "#ffffff", "width": 4}, {"color": INK, "width": 1.6})
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
    """Grey lines under a figure title (append them to the title text): one per ``<br>`` of ``text``, each styled (a
    plotly span does not carry its style past a line break)."""
    return "".join(f"<br><span style='font-size:12px;color:{NEUTRAL}'>{line}</span>" for line in text.split("<br>"))


TITLE_PAD = 20  # px above the title
TITLE_LINE, SUBTITLE_LINE, LEGEND_ROW = 22, 17, 30  # px: a 16 px title line, a 12 px subtitle line, a legend row


def top_margin(title: str, legend: bool, *, title_px: float = 16, text_px: float = 12) -> int:
    """The top margin that holds the title's lines (the first at ``title_px``, the rest subtitle lines at
    ``text_px``) and, when shown, a legend row between them and the plot."""
    lines = title.count("<br>")
    grow = text_px / 12
    return round(TITLE_PAD + TITLE_LINE * title_px / 16 + grow * (SUBTITLE_LINE * lines + (LEGEND_ROW if legend else 0) + 14))


def style(fig: go.Figure, title: str, *, height: int = 420, width: int | None = None, legend: bool = True) -> go.Figure:
    """Apply the kdviz look: white template, one font, a left-aligned title, compact margins."""
    use_white_template(fig)
    set_layout(fig, style_layout(title, height=height, width=width, legend=legend))
    return fig.update_xaxes(ticklabelstandoff=4)  # every first x tick label clear of the lowest y tick label


def set_layout(fig: go.Figure, values: dict) -> go.Figure:
    """``fig.update_layout(values)`` at a quarter of its cost: a layout property not set yet is assigned whole
    (validated once), and only one already set is merged key by key, as update_layout merges every one (6 ms of
    each figure a dashboard redraws)."""
    layout, merge = fig.layout, {}
    for key, value in values.items():
        current = layout[key]
        if isinstance(value, dict) and isinstance(current, BasePlotlyType) and current.to_plotly_json():
            merge[key] = value
        else:
            layout[key] = value
    if merge:
        fig.update_layout(merge)
    return fig


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


def hline(fig: go.Figure, y: float, line: dict) -> None:
    """A horizontal line at ``y`` across a one-plot figure (`vline` on its side, without ``fig.add_hline``'s subplot
    scan)."""
    fig.add_shape(type="line", y0=y, y1=y, yref="y", x0=0, x1=1, xref="x domain", line=line)


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
        hline(fig, y, line)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line, name=name, hoverinfo="skip"))


# ---- presentation mode: text a lecture hall can read ----
# `kdviz serve --present`, ``?present=1`` and `present()` in a notebook draw every figure through `presented`: no text
# under 18 px, titles at 26 px, lines 1.6× as thick, and the figure grown to hold the larger type.
PRESENT_TEXT = 18  # px, the smallest text shown
PRESENT_TITLE = 26  # px, figure titles
PRESENT_LINES = 1.6  # line widths × this
PRESENT_GROWTH = 1.3  # figure heights and margins × this (plots keep their share of the larger figure)
PRESENT_MAX_WIDTH = 1400  # px: a fixed-width figure grows no wider than a 1,440 px screen holds
FONT_KEYS = ("font", "tickfont", "textfont", "insidetextfont", "outsidetextfont", "titlefont")
_INLINE_SIZE = re.compile(r"font-size:\s*(\d+(?:\.\d+)?)px")
_SCRIPT = re.compile(r"<(sub|sup)>(.*?)</\1>")
_presenting = False
_drawing_for: contextvars.ContextVar[bool | None] = contextvars.ContextVar("kdviz_presenting", default=None)


def present(on: bool = True) -> None:
    """Presentation mode for this Python process (a notebook kernel): explorers made afterwards draw their figures
    through `presented` and their text at no less than `PRESENT_TEXT` px. ``present(False)`` turns it off."""
    global _presenting
    _presenting = bool(on)


def presenting() -> bool:
    """Whether figures are being drawn for projection: inside `drawing_for` (an explorer of a served session), what
    it says; else whether `present` is on for this process."""
    inside = _drawing_for.get()
    return _presenting if inside is None else inside


@contextlib.contextmanager
def drawing_for(present: bool) -> Iterator[None]:
    """Draw for projection (or not) inside this block, whatever `present` says for the process: each served
    session's explorers draw in their own mode."""
    token = _drawing_for.set(bool(present))
    try:
        yield
    finally:
        _drawing_for.reset(token)


def text_px() -> float:
    """The body text size figures are drawn at now (px): for a view that sizes its cells to the text it holds."""
    return PRESENT_TEXT if presenting() else FONT_SIZE


PRESENT_BAR_MARGIN = 120  # px right of a plot with a colour bar, in presentation mode


def _has_colour_bar(trace: dict) -> bool:
    """Whether a trace (as plotly JSON) draws a colour bar: a map whose scale is not hidden, or markers with one."""
    if trace.get("type") in ("heatmap", "contour", "histogram2d", "histogram2dcontour"):
        return trace.get("showscale", True) is not False
    marker = trace.get("marker")
    return isinstance(marker, dict) and bool(marker.get("showscale"))


def presented(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` for projection: every font (ticks, cell text, annotations, colour bars, inline HTML sizes in
    texts) at least `PRESENT_TEXT` px, the title `PRESENT_TITLE`, lines `PRESENT_LINES`× as thick, and its height and
    margins grown by `PRESENT_GROWTH` so the larger type keeps its room."""
    spec = fig.to_plotly_json()
    for trace in spec.get("data", []):
        _larger_type(trace)
        bar = trace.get("colorbar")
        if isinstance(bar, dict) and (bar.get("title") or {}).get("side") == "top":
            bar["ticklabelposition"] = "outside bottom"  # the top tick's label below its tick, clear of the title
        for part in ("header", "cells"):  # a table's rows, sized for 13-14 px text
            if isinstance(trace.get(part), dict) and isinstance(trace[part].get("height"), int | float):
                trace[part]["height"] = round(trace[part]["height"] * PRESENT_GROWTH)
        if isinstance(trace.get("line"), dict) or "lines" in str(trace.get("mode", "")):
            line = trace.setdefault("line", {})
            if isinstance(line.get("width", 2), int | float):
                line["width"] = line.get("width", 2) * PRESENT_LINES
    layout = spec.setdefault("layout", {})
    _larger_type(layout)
    for shape in layout.get("shapes", []):
        line = shape.setdefault("line", {})
        line["width"] = (line.get("width") or 2) * PRESENT_LINES
    layout.setdefault("font", {})["size"] = PRESENT_TEXT
    title = layout.get("title")
    if isinstance(title, dict) and title.get("text"):
        title.setdefault("font", {})["size"] = PRESENT_TITLE
    margin = layout.get("margin") or {}
    height = layout.get("height") or 450
    grown_top = top_margin(title.get("text", "") if isinstance(title, dict) else "", layout.get("showlegend", True),
                           title_px=PRESENT_TITLE, text_px=PRESENT_TEXT)
    grown = round((margin.get("t") or 80) * PRESENT_GROWTH)
    layout["margin"] = {**margin, **{side: round((margin.get(side) or 60) * PRESENT_GROWTH) for side in ("l", "r", "b")},
                        "t": max(grown, grown_top)}
    if any(_has_colour_bar(trace) for trace in spec.get("data", [])):  # its 18 px tick labels right of the plot
        layout["margin"]["r"] = max(layout["margin"]["r"], PRESENT_BAR_MARGIN)
    if layout.get("width"):  # a fixed width grows too, up to a 1,440 px screen's
        layout["width"] = min(round(layout["width"] * PRESENT_GROWTH), max(layout["width"], PRESENT_MAX_WIDTH))
    layout["height"] = round(height * PRESENT_GROWTH) + max(0, layout["margin"]["t"] - grown)
    if isinstance(title, dict) and title.get("yref") == "container":
        title["y"] = 1 - TITLE_PAD / layout["height"]
    return go.Figure(spec)


def _larger_type(node: dict | list) -> None:
    """Raise every font size under ``node`` (a figure's JSON) to `PRESENT_TEXT`, inline HTML sizes in texts too."""
    for key, value in list(node.items() if isinstance(node, dict) else enumerate(node)):
        if key in FONT_KEYS and isinstance(value, dict) and isinstance(value.get("size"), int | float):
            value["size"] = max(value["size"], PRESENT_TEXT)
        if isinstance(value, str) and ("font-size" in value or "<su" in value):
            node[key] = _larger_inline(value)
        elif isinstance(value, dict | list):
            _larger_type(value)


def _larger_inline(text: str) -> str:
    """Inline sizes in a text raised to `PRESENT_TEXT`; sub- and superscripts (drawn at 70 %) given it outright."""
    text = _INLINE_SIZE.sub(lambda m: f"font-size:{max(float(m.group(1)), PRESENT_TEXT):g}px", text)
    return _SCRIPT.sub(lambda m: f"<{m.group(1)}><span style='font-size:{PRESENT_TEXT}px'>{m.group(2)}</span></{m.group(1)}>", text)


# The dashboard's and explorers' HTML in presentation mode (given to each HTML pane as a stylesheet): inline sizes
# are overridden, headings and the cards' big numbers stay larger than the body.
PRESENT_CSS = f"""
:host, :host * {{ font-size: {PRESENT_TEXT}px !important; line-height: 1.45; }}
:host h1 {{ font-size: 34px !important; }}
:host h2 {{ font-size: 28px !important; }}
:host h3 {{ font-size: 22px !important; }}
:host .kd-metric {{ font-size: 36px !important; }}
"""
# widgets and tab bars in presentation mode: Bokeh sizes their labels and values from this variable (12 px by default)
PRESENT_WIDGET_CSS = (f":host {{ --bokeh-font-size: {PRESENT_TEXT}px; --font-size: {PRESENT_TEXT}px; }} "
                      f"select, option, input, button, label {{ font-size: {PRESENT_TEXT}px !important; }}")
