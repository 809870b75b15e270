"""Showing plotly figures inside ipywidgets Output areas (works in JupyterLab and in headless tests)."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display

from kdviz.store import Run


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


class StepControl:
    """For explorers of a run with training history (`kdviz.distill`): a ``step`` slider over the recorded steps
    (None without history) that shows the run as it was at the chosen step; the explorer reloads in `_reload`."""

    base_run: Run
    run: Run
    step: widgets.SelectionSlider | None

    def _open_at_step(self, run: Run | str, step: int | None) -> Run:
        """Open ``run`` and make the slider; returns the run at ``step`` (default: the last recorded one)."""
        self.base_run = run if isinstance(run, Run) else Run.open(run)
        steps = self.base_run.steps
        self.step = None
        if not steps:
            return self.base_run
        chosen = steps[-1] if step is None else int(step)
        self.step = widgets.SelectionSlider(options=steps, value=chosen, description="step", continuous_update=False)
        return self.base_run.at_step(chosen)

    def _step_widgets(self) -> list[widgets.Widget]:
        """The slider, to place under an explorer's heading (nothing for runs without history)."""
        if self.step is None:
            return []
        self.step.observe(lambda change: self.show_step(change["new"]), names="value")
        return [self.step]

    def show_step(self, step: int) -> None:
        """Show the run at a recorded training step (what moving the slider does)."""
        self.run = self.base_run.at_step(step)
        if self.step is not None and self.step.value != step:
            self.step.value = step  # fires show_step again through the observer, with the same step
            return
        self._reload()

    def _reload(self) -> None:  # pragma: no cover - each explorer defines it
        raise NotImplementedError
