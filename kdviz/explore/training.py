"""`TrainingExplorer`: how the student approached the teacher over the recorded steps (`kdviz.distill` runs).
Clicking a point of the curves shows every explorer of the selection at that step, as the step menu does."""

from __future__ import annotations

from typing import Any

import panel as pn

from kdviz.errors import MissingDataError
from kdviz.explore.base import Explorer, clicked_point, heading, plot
from kdviz.readers.training import TrainingData
from kdviz.views import training as views


class TrainingExplorer(Explorer):
    """The training curves with the shown step marked, and the teacher-hacking view where CE was recorded."""

    title = "Training"
    watches = ()  # the step is the run: a step change rebuilds, which marks it on the curves
    standalone_controls = ()

    def build(self) -> list[Any]:
        data: TrainingData = self.library.data("training", self.selection.run)  # history of the whole run, not a step
        self.panes = {"curves": plot()}
        self.panes["curves"].param.watch(self._curve_clicked, "click_data")
        self.show_figure("curves", self.panes["curves"], views.training_curves(data, selected_step=self.selection.step))
        parts = [heading(f"Training: {self.run.name} ({len(data.steps)} recorded steps)"), self.panes["curves"]]
        try:
            self.panes["hacking"] = plot()
            self.show_figure("hacking", self.panes["hacking"], views.teacher_hacking_view(data))
            parts.append(self.panes["hacking"])
        except MissingDataError as exc:
            parts.append(pn.pane.Markdown(f"*{exc}*"))
        return parts

    def _curve_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        steps = self.library.run(self.selection.run).steps
        if point is not None and isinstance(point.get("x"), (int, float)) and steps:
            self.selection.step = min(steps, key=lambda s: abs(s - point["x"]))
