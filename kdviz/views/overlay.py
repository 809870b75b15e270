"""Maps drawn over the input image: one overlay, and the teacher | student | teacher − student row that attention
and attribution views share. Low values are see-through, so the picture stays visible."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from kdviz.views import theme


def overlay(fig: go.Figure, image: np.ndarray, z: np.ndarray, *, row: int, col: int, zmax: float, label: str, n_cols: int = 3,
            colorscale: object = None, zmin: float = 0.0, showscale: bool = False, colorbar: dict | None = None,
            ink: float = 1.0) -> None:
    """Draw ``z`` [gh, gw] over the image [h, w] (``row``, ``col`` of an ``n_cols``-wide subplot grid) so each cell
    covers its patch of the picture; low values are transparent. ``ink`` < 1 draws the image fainter, so that
    two-sided colour scales stay readable over it."""
    grey = image.mean(-1) if image.ndim == 3 else image
    height, width = grey.shape
    fig.add_trace(go.Heatmap(z=grey.astype(np.float32), colorscale=theme.IMAGE_SCALE, showscale=False, hoverinfo="skip",
                             zmin=0, zmax=255 / ink), row=row, col=col)
    dy, dx = height / z.shape[0], width / z.shape[1]
    fig.add_trace(go.Heatmap(z=z.astype(np.float32), x0=-0.5 + dx / 2, dx=dx, y0=-0.5 + dy / 2, dy=dy,
                             colorscale=colorscale or theme.OVERLAY_SCALE, zmin=zmin, zmax=zmax,
                             showscale=showscale, colorbar=colorbar,
                             hovertemplate=f"{label}<br>pixel row %{{y:.0f}}, col %{{x:.0f}}: %{{z:.3f}}<extra></extra>"),
                  row=row, col=col)
    axis = (row - 1) * n_cols + col
    fig.update_xaxes(visible=False, range=[-0.5, width - 0.5], constrain="domain", row=row, col=col)
    fig.update_yaxes(visible=False, range=[height - 0.5, -0.5], scaleanchor=f"x{axis if axis > 1 else ''}", constrain="domain",
                     row=row, col=col)


def overlay_pair(fig: go.Figure, image: np.ndarray, t_grid: np.ndarray, s_grid: np.ndarray, *, row: int, what: str,
                 colorbar: dict, difference_colorbar: dict | None = None, signed: bool = False, ink: float = 1.0) -> None:
    """Teacher | student on one scale (colour bar ``colorbar``) | teacher − student, each over the image, in ``row``.

    ``signed`` maps (evidence for and against) get a scale symmetric about 0 that is see-through at 0.
    """
    top = float(max(np.abs(t_grid).max(), np.abs(s_grid).max(), 1e-12))
    low, scale = (-top, theme.SIGNED_OVERLAY_SCALE) if signed else (0.0, theme.OVERLAY_SCALE)
    overlay(fig, image, t_grid, row=row, col=1, zmin=low, zmax=top, colorscale=scale, label=f"teacher, {what}", ink=ink)
    overlay(fig, image, s_grid, row=row, col=2, zmin=low, zmax=top, colorscale=scale, label=f"student, {what}", showscale=True,
            colorbar=colorbar, ink=ink)
    diff = t_grid - s_grid
    spread = float(max(np.abs(diff).max(), 1e-12))
    overlay(fig, image, diff, row=row, col=3, zmin=-spread, zmax=spread, label="teacher − student", ink=ink,
            colorscale=theme.DIFFERENCE_OVERLAY_SCALE, showscale=difference_colorbar is not None, colorbar=difference_colorbar)
