"""Showing plotly figures inside ipywidgets Output areas (works in JupyterLab and in headless tests)."""

from __future__ import annotations

from collections.abc import Callable

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


def replace_figure(widget: go.FigureWidget, fig: go.Figure, on_click: Callable[..., None] | None = None) -> None:
    """Show ``fig`` in a clickable FigureWidget: traces are updated in place when their number is unchanged (click
    handlers stay attached), else replaced and ``on_click`` attached to each new trace."""
    with widget.batch_update():
        if len(widget.data) != len(fig.data):
            widget.data = []
            widget.add_traces(list(fig.data))
            if on_click is not None:
                for trace in widget.data:
                    trace.on_click(on_click)
        else:
            for target, source in zip(widget.data, fig.data, strict=True):
                target.update(source.to_plotly_json())
        widget.layout = fig.layout
