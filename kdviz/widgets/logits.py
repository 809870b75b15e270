"""`LogitExplorer`: where, and how, the student's output distribution differs from the teacher's, in a notebook."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np

from kdviz.metrics import logits as lm
from kdviz.metrics.classwise import QUADRANTS
from kdviz.store import Run
from kdviz.views import logits as views
from kdviz.views.run_data import SORTS, LogitData
from kdviz.views.text import escape_label
from kdviz.widgets._display import StepControl, figure_output, show

TABLE_ROWS = 40


class LogitExplorer(StepControl, widgets.VBox):
    """Explore a run's logits: a temperature slider, a measure menu, class and correctness filters, a sortable table
    of samples, and for the selected sample a drill-down. Language-model runs show per-token divergence instead
    (their stored statistics are at T=1, so the slider is disabled there).

    ``explorer.values`` holds the current per-sample values; ``explorer.figures`` the current figures.
    """

    def __init__(self, run: Run | str, *, T: float = 4.0, measure: str = "kl", step: int | None = None) -> None:
        self.run = self._open_at_step(run, step)
        self.data = LogitData.from_run(self.run)
        self.tokens = self.data.task == "tokens"
        measures = self.data.measures()
        self.temperature = widgets.FloatLogSlider(value=1.0 if self.tokens else T, base=10, min=-0.5, max=1.5, step=0.01,
                                                  description="T", continuous_update=False, disabled=self.tokens,
                                                  readout_format=".2f")
        self.measure = widgets.Dropdown(options=[(lm.MEASURES[m], m) for m in measures], value=measure, description="measure")
        class_options = [("all classes", -1)] + [(str(c), i) for i, c in enumerate(self.data.class_names or [])]
        self.class_filter = widgets.Dropdown(options=class_options, value=-1, description="class", disabled=self.tokens)
        quadrant_options = [("all samples", "all")] + [(q, q) for q in QUADRANTS]
        has_labels = self.data.labels is not None and not self.tokens
        self.correctness = widgets.Dropdown(options=quadrant_options, value="all", description="correct", disabled=not has_labels)
        self.sort = widgets.Dropdown(options=SORTS, value=SORTS[0], description="sort")
        self.table = widgets.Select(options=[], rows=12, description="samples", layout=widgets.Layout(width="520px"))
        self.outputs = {name: figure_output() for name in ("summary", "histogram", "detail")}
        self.figures: dict[str, Any] = {}
        self.values = np.zeros(0)
        self.selected: int | None = None
        self._refreshing = False
        controls = widgets.HBox([self.temperature, self.measure])
        filters = widgets.HBox([self.class_filter, self.correctness, self.sort])
        super().__init__([
            widgets.HTML(f"<h3>Logits: {escape_label(self.run.name)} ({self.run.task}, {self.run.n_samples:,} samples)</h3>"),
            *self._step_widgets(), controls, filters, widgets.HBox([self.table, self.outputs["summary"]]),
            self.outputs["histogram"], self.outputs["detail"],
        ])
        for control in (self.temperature, self.measure, self.class_filter, self.correctness, self.sort):
            control.observe(self._on_change, names="value")
        self.table.observe(self._on_select, names="value")
        self.refresh()

    def _reload(self) -> None:
        self.data = LogitData.from_run(self.run)
        self.refresh()

    # ---- state ----
    def visible_samples(self) -> np.ndarray:
        """Indices that pass the class and correctness filters, in the chosen order."""
        return self.data.visible(self.values, class_index=self.class_filter.value, quadrant=self.correctness.value,
                                 order=self.sort.value)

    def refresh(self) -> None:
        """Recompute the per-sample values and redraw everything but the drill-down."""
        self.values = self.data.per_sample(self.measure.value, self.temperature.value)
        T, measure = self.temperature.value, self.measure.value
        visible = self.visible_samples()
        self._refreshing = True  # replacing the options fires a selection event; the current sample is kept instead
        try:
            self.table.options = [(self.data.row_label(i, measure, self.values), int(i)) for i in visible[:TABLE_ROWS]]
        finally:
            self._refreshing = False
        self.figures["histogram"] = views.divergence_histogram(self.values[visible], measure=measure, T=T)
        self.figures["summary"] = views.summary_card(self.data.summary(self.temperature.value))
        show(self.outputs["histogram"], self.figures["histogram"])
        show(self.outputs["summary"], self.figures["summary"])
        if len(visible):
            self.select(int(visible[0]) if self.selected not in set(visible.tolist()) else self.selected)

    def select(self, index: int) -> None:
        """Drill into one sample (also what a click in the table does)."""
        self.selected = index
        fig = views.sample_detail(self.data, index, measure=self.measure.value, T=self.temperature.value)
        self.figures["detail"] = fig
        show(self.outputs["detail"], fig)
        if self.table.value != index and index in [value for _, value in self.table.options]:
            self.table.value = index

    def _on_change(self, _change: dict) -> None:
        self.refresh()

    def _on_select(self, change: dict) -> None:
        if not self._refreshing and change["new"] is not None and change["new"] != self.selected:
            self.select(int(change["new"]))
