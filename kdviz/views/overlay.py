"""Maps drawn on the input image: one map, and the teacher | student | teacher − student row that attention and
attribution views share. The map is drawn opaque, each cell over its patch of the picture, and the picture itself as
its outline on top (an ink contour over a white halo), so a value on the strokes reads as that value: blending a
see-through map onto a dark picture turned every value on the strokes into the same brown."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from kdviz.views import theme


def outline(fig: go.Figure, image: np.ndarray, *, row: int, col: int) -> None:
    """The input image [h, w] or [h, w, 3] as its outline: the contour at half its brightness range, in ink over a
    white halo, so it shows on light and dark cells alike."""
    grey = (image.mean(-1) if image.ndim == 3 else image).astype(np.float32)
    low, high = float(grey.min()), float(grey.max())
    if high <= low:  # a flat image has no outline
        return
    level = (low + high) / 2
    for line in theme.OUTLINE_LINES:
        fig.add_trace(go.Contour(z=grey, contours={"start": level, "end": level, "size": 1.0, "coloring": "none"},
                                 line=line, showscale=False, hoverinfo="skip", showlegend=False), row=row, col=col)


def overlay(fig: go.Figure, image: np.ndarray, z: np.ndarray, *, row: int, col: int, zmax: float, label: str, n_cols: int = 3,
            colorscale: object = None, zmin: float = 0.0, showscale: bool = False, colorbar: dict | None = None) -> None:
    """Draw ``z`` [gh, gw] on the image [h, w] (``row``, ``col`` of an ``n_cols``-wide subplot grid), each cell over
    its patch, with the image's `outline` on top. ``colorscale``: opaque (default `theme.SEQUENTIAL_SCALE`)."""
    height, width = image.shape[:2]
    dy, dx = height / z.shape[0], width / z.shape[1]
    fig.add_trace(go.Heatmap(z=z.astype(np.float32), x0=-0.5 + dx / 2, dx=dx, y0=-0.5 + dy / 2, dy=dy,
                             colorscale=colorscale or theme.SEQUENTIAL_SCALE, zmin=zmin, zmax=zmax,
                             showscale=showscale, colorbar=colorbar,
                             hovertemplate=f"{label}<br>pixel row %{{y:.0f}}, col %{{x:.0f}}: %{{z:.3f}}<extra></extra>"),
                  row=row, col=col)
    outline(fig, image, row=row, col=col)
    axis = (row - 1) * n_cols + col
    fig.update_xaxes(visible=False, range=[-0.5, width - 0.5], constrain="domain", row=row, col=col)
    fig.update_yaxes(visible=False, range=[height - 0.5, -0.5], scaleanchor=f"x{axis if axis > 1 else ''}", constrain="domain",
                     row=row, col=col)


def overlay_pair(fig: go.Figure, image: np.ndarray, t_grid: np.ndarray, s_grid: np.ndarray, *, row: int, what: str,
                 colorbar: dict, difference_colorbar: dict | None = None, signed: bool = False) -> None:
    """Teacher | student on one scale (colour bar ``colorbar``) | teacher − student, each on the image, in ``row``.

    ``signed`` maps (evidence for and against) get a scale symmetric about 0, white at 0.
    """
    top = float(max(np.abs(t_grid).max(), np.abs(s_grid).max(), 1e-12))
    low, scale = (-top, theme.SIGNED_SCALE) if signed else (0.0, theme.SEQUENTIAL_SCALE)
    overlay(fig, image, t_grid, row=row, col=1, zmin=low, zmax=top, colorscale=scale, label=f"teacher, {what}")
    overlay(fig, image, s_grid, row=row, col=2, zmin=low, zmax=top, colorscale=scale, label=f"student, {what}", showscale=True,
            colorbar=colorbar)
    diff = t_grid - s_grid
    spread = float(max(np.abs(diff).max(), 1e-12))
    overlay(fig, image, diff, row=row, col=3, zmin=-spread, zmax=spread, label="teacher − student",
            colorscale=theme.DIFFERENCE_SCALE, showscale=difference_colorbar is not None, colorbar=difference_colorbar)
