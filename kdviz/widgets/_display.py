"""Showing plotly figures inside ipywidgets Output areas (works in JupyterLab and in headless tests)."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display


def figure_output() -> widgets.Output:
    return widgets.Output(layout=widgets.Layout(width="100%"))


def show(output: widgets.Output, fig: go.Figure) -> None:
    """Replace what ``output`` shows with ``fig`` (plotly.js is bundled by the plotly package: no CDN)."""
    output.clear_output(wait=True)
    with output:
        display(fig)
