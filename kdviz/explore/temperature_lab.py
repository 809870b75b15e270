"""`TemperatureLab`: a lecture-ready lab on temperature, the KD loss, forward vs reverse KL and DKD. Needs no run.

Four tabs, each a figure of `views.teaching`. Every control is a parameter, so a lecture can script a demo from code
(``lab.T = 8``) and the class sees the figures move.
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
import panel as pn
import param
import plotly.graph_objects as go

from kdviz.errors import InputError
from kdviz.explore.base import FigureViewer, for_presentation, plot, tabs
from kdviz.explore.redraw_once import redraw_once
from kdviz.views import teaching as views
from kdviz.views import theme

DEFAULT_TEACHER = "6, 3.5, 2, 1, 0, -1, -2"
DEFAULT_STUDENT = "4, 4, 0.5, 0.5, 0, 0, -1"
TABS = {"softmax": "1 · softmax at T", "loss": "2 · KD loss, T²", "modes": "3 · forward / reverse KL",
        "dkd": "4 · DKD split"}


def parse_logits(text: str) -> np.ndarray:
    """'6, 3.5, -1' -> array([6., 3.5, -1.]); raises `InputError` with the fix for anything else."""
    try:
        values = np.array([float(part) for part in text.replace(";", ",").split(",") if part.strip()], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"logits must be numbers separated by commas, like '{DEFAULT_TEACHER}'") from exc
    if len(values) < 2 or not np.isfinite(values).all():
        raise InputError("give at least two finite logits, separated by commas")
    return values


class TemperatureLab(FigureViewer):
    """(1) softmax at temperature T and the dark knowledge it reveals; (2) the KD loss α·CE + (1−α)·T²·KL and why T²
    is there; (3) forward vs reverse KL fitting a bimodal teacher; (4) the DKD split. ``figures()`` holds the four
    figures; ``message`` says what is wrong with typed logits."""

    teacher_logits = param.String(default=DEFAULT_TEACHER, label="teacher z", doc="the teacher's logits, comma-separated")
    student_logits = param.String(default=DEFAULT_STUDENT, label="student z", doc="the student's logits, comma-separated")
    target = param.Integer(default=0, bounds=(0, None), label="target class", doc="the labelled class")
    T = param.Number(default=1.0, bounds=(0.5, 20.0), label="temperature T", doc="the softmax temperature")
    alpha = param.Number(default=0.5, bounds=(0.0, 1.0), label="α (CE weight)", doc="weight of the hard-label CE")
    separation = param.Number(default=4.0, bounds=(0.5, 7.0), label="mode gap", doc="distance of the teacher's two modes")

    def __init__(self, *, present: bool | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.present = theme.presenting() if present is None else bool(present)
        self._figures: dict[str, go.Figure] = {}
        self.message = pn.pane.HTML("", margin=(0, 10))
        self.loss_text = pn.pane.HTML("", margin=(0, 10), sizing_mode="stretch_width")
        self.panes = {name: plot() for name in TABS}
        kinds = {"teacher_logits": (pn.widgets.TextInput, {"width": 380}), "student_logits": (pn.widgets.TextInput, {"width": 380}),
                 "target": (pn.widgets.IntInput, {"width": 120}), "T": (pn.widgets.FloatSlider, {"step": 0.05, "width": 300}),
                 "alpha": (pn.widgets.FloatSlider, {"step": 0.05, "width": 260}),
                 "separation": (pn.widgets.FloatSlider, {"step": 0.5, "width": 300})}

        def control(name: str) -> pn.widgets.Widget:  # a widget per place it is shown, each bound to the parameter
            kind, options = kinds[name]
            return kind.from_param(self.param[name], **options)

        def row(*widgets: pn.widgets.Widget) -> pn.FlexBox:  # wraps on a narrow notebook instead of cutting labels off
            return pn.FlexBox(*widgets, flex_wrap="wrap", sizing_mode="stretch_width")

        def logits_row() -> pn.Column:
            return pn.Column(row(control("teacher_logits"), control("target")), control("student_logits"))

        def page(*parts: Any) -> pn.Column:  # as wide as the notebook, not as its widest figure's first draw
            return pn.Column(*parts, sizing_mode="stretch_width")

        self.tabs = tabs(
            (TABS["softmax"], page(row(control("teacher_logits"), control("target"), control("T")), self.message,
                                        self.panes["softmax"])),
            (TABS["loss"], page(logits_row(), row(control("T"), control("alpha")), self.loss_text, self.panes["loss"])),
            (TABS["modes"], page(control("separation"), self.panes["modes"])),
            (TABS["dkd"], page(logits_row(), control("T"), self.panes["dkd"])),
            dynamic=False, sizing_mode="stretch_width",
        )
        self._layout = pn.Column(self.tabs, redraw_once(), sizing_mode="stretch_width")
        if self.present:
            for_presentation(self._layout)
        self.param.watch(lambda _e: self.refresh(), ["teacher_logits", "student_logits", "target", "T", "alpha"])
        self.param.watch(lambda _e: self.refresh_modes(), ["separation"])
        self.refresh()
        self.refresh_modes()

    def _show(self, name: str, fig: go.Figure) -> None:
        self._figures[name] = fig
        self.panes[name].object = self.drawn(fig)

    def logits(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Both typed logit vectors, or None (with ``message`` saying what to fix)."""
        try:
            z_t, z_s = parse_logits(self.teacher_logits), parse_logits(self.student_logits)
        except InputError as exc:
            self.message.object = f"<span style='color:{theme.ERROR}'>{escape(str(exc))}</span>"
            return None
        if len(z_t) != len(z_s):
            self.message.object = f"<span style='color:{theme.ERROR}'>teacher and student need the same number of logits</span>"
            return None
        self.message.object = ""
        return z_t, z_s

    def refresh(self) -> None:
        logits = self.logits()
        if logits is None:
            return
        z_t, z_s = logits
        self.param.target.bounds = (0, len(z_t) - 1)
        T, y = float(self.T), min(self.target, len(z_t) - 1)
        self._show("softmax", views.softmax_figure(z_t, T, y))
        self.loss_text.object = views.loss_formula(z_t, z_s, T, y, self.alpha)
        self._show("loss", views.loss_figure(z_t, z_s, T))
        self._show("dkd", views.dkd_figure(z_t, z_s, T, y))

    def refresh_modes(self) -> None:
        self._show("modes", views.modes_figure(self.separation))
