"""Two tokenizations of one text, one above the other: each model's pieces, the boundaries both share joined across
the two lanes, and each span coloured by how much likelier one model finds it (issue 19)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from kdviz.metrics.token_alignment import TextComparison
from kdviz.text import escape_label
from kdviz.views import theme

LANE_ROWS = 3  # teacher lane, student lane, a blank row between lines of text
VISIBLE = {"\n": "↵", "\t": "→", " ": " "}


def _span_of_characters(comparison: TextComparison) -> np.ndarray:
    """The span index [len(text)] each character belongs to (−1 after the last shared boundary)."""
    owner = np.full(len(comparison.text), -1, dtype=np.int64)
    start = 0
    for k, stop in enumerate(comparison.alignment.boundaries.tolist()):
        owner[start:stop] = k
        start = stop
    return owner


def _piece_of_characters(offsets: np.ndarray, length: int) -> np.ndarray:
    """The piece index [length] that holds each character in one tokenization (−1: none, a trimmed space)."""
    owner = np.full(length, -1, dtype=np.int64)
    for i, (a, b) in enumerate(np.asarray(offsets).tolist()):
        owner[a:min(b, length)] = i
    return owner


def alignment_view(comparison: TextComparison, *, start: int = 0, max_chars: int = 640,
                   chars_per_line: int = 80) -> go.Figure:
    """Characters ``start … start + max_chars`` of the text on a grid of ``chars_per_line`` columns, in two lanes per
    line (teacher above, student below). Each character's cell is coloured by its span's log p_t − log p_s (blue:
    the teacher finds the span likelier; orange: the student). A white gap marks where one tokenization ends a piece;
    a dark line joins the lanes where both do (a shared boundary, where the next-piece KL is exact). Hover: the
    piece, the span, both log-probabilities and the KL at the span's end."""
    text = comparison.text
    stop = min(len(text), start + max_chars)
    if not 0 <= start < max(1, len(text)):
        raise ValueError(f"start {start} is outside the text of {len(text)} characters")
    rows = max(1, -(-(stop - start) // chars_per_line))
    z = np.full((rows * LANE_ROWS, chars_per_line), np.nan)
    labels = np.full(z.shape, "", dtype=object)
    hover = np.full(z.shape, "", dtype=object)
    span_of = _span_of_characters(comparison)
    piece_of = {role: _piece_of_characters(comparison.offsets[role], len(text)) for role in ("teacher", "student")}
    difference = comparison.spans["difference"]
    kl = comparison.boundary["kl"]
    for position in range(start, stop):
        row, column = divmod(position - start, chars_per_line)
        k = int(span_of[position])
        for lane, role in enumerate(("teacher", "student")):
            y = row * LANE_ROWS + lane
            labels[y, column] = escape_label(VISIBLE.get(text[position], text[position]))
            piece = int(piece_of[role][position])
            piece_text = comparison.pieces[role][piece] if piece >= 0 else "(no piece)"
            if k < 0:
                hover[y, column] = f"{role} piece <b>{escape_label(piece_text)}</b><br>after the last shared boundary"
                continue
            z[y, column] = difference[k]
            hover[y, column] = (
                f"{role} piece <b>{escape_label(piece_text)}</b><br>span {k}: <b>{escape_label(comparison.span_text(k))}</b>"
                f"<br>log p_t = {comparison.spans['teacher'][k]:.3f}, log p_s = {comparison.spans['student'][k]:.3f}"
                f"<br>log p_t − log p_s = {difference[k]:+.3f}<br>next-piece KL(p̂_t‖p̂_s) after it = {kl[k]:.4f}")
    finite = np.abs(difference[np.isfinite(difference)])
    reach = float(np.percentile(finite, 99)) if len(finite) else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, text=labels, customdata=hover, texttemplate="%{text}", hovertemplate="%{customdata}<extra></extra>",
        textfont={"family": "monospace", "size": 13, "color": theme.INK}, colorscale=theme.DIFFERENCE_SCALE,
        zmid=0, zmin=-reach, zmax=reach, ygap=0, xgap=0,
        colorbar={"title": {"text": "log p_t − log p_s<br>(nats, per span)<br>blue: teacher higher<br>orange: student higher",
                            "side": "right"}, "len": 0.9},
    ))
    shapes = []

    def cut(position: int, lanes: tuple[int, int], colour: str, width: float) -> None:
        """A vertical line after character ``position − 1`` across lanes ``lanes`` (first, last) of its line."""
        row, column = divmod(position - start, chars_per_line)
        if column == 0:  # a boundary at a line's start is the previous line's end
            if row == 0:
                return
            row, column = row - 1, chars_per_line
        top, bottom = row * LANE_ROWS + lanes[0] - 0.5, row * LANE_ROWS + lanes[1] + 0.5
        shapes.append({"type": "line", "x0": column - 0.5, "x1": column - 0.5, "y0": top, "y1": bottom,
                       "line": {"color": colour, "width": width}, "layer": "above"})

    shared = set(comparison.alignment.boundaries.tolist())
    for lane, role in enumerate(("teacher", "student")):
        for end in sorted({int(end) for _, end in np.asarray(comparison.offsets[role]).tolist()} - shared):
            if start < end <= stop:
                cut(end, (lane, lane), theme.CARD, 3)  # a gap of the page colour
    for end in shared:
        if start < end <= stop:
            cut(end, (0, 1), theme.INK, 1.5)
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(visible=False, range=[-0.5, chars_per_line - 0.5])
    ticks = [(row * LANE_ROWS + lane, role) for row in range(rows) for lane, role in enumerate(("teacher", "student"))]
    fig.update_yaxes(autorange="reversed", tickvals=[t for t, _ in ticks], ticktext=[r for _, r in ticks],
                     showgrid=False, zeroline=False, tickfont={"size": 12})
    n_t, n_s = len(comparison.pieces["teacher"]), len(comparison.pieces["student"])
    title = (f"Two tokenizations of one text: teacher {n_t} pieces, student {n_s}, "
             f"{len(comparison.alignment.boundaries)} shared boundaries" + theme.subtitle(
                 f"characters {start}–{stop} of {len(text)}; dark line: both end a piece; white gap: one does; "
                 "colour: the span's log p_t − log p_s (blue: teacher likelier)"))
    # at least 280 px, so that a text of one line still leaves its colour bar room for a scale and its title
    fig = theme.style(fig, title, height=max(280, 110 + 22 * rows * LANE_ROWS), width=150 + 15 * chars_per_line,
                      legend=False)
    return fig.update_layout(margin={"l": 70, "r": 20, "t": 90, "b": 10})
