"""`LogitExplorer`: where, and how, the student's output distribution differs from the teacher's, in a notebook."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np

from kdviz.metrics import logits as lm
from kdviz.metrics.classwise import QUADRANTS, correctness_masks
from kdviz.store import Run
from kdviz.views import logits as views
from kdviz.views.run_data import LogitData
from kdviz.views.text import escape_label
from kdviz.widgets._display import StepControl, figure_output, show

SORTS = ("most divergent first", "least divergent first", "sample index")
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
        measures = ["kl", "reverse_kl"] if self.tokens else list(lm.MEASURES)
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
    def _per_sample(self) -> np.ndarray:
        if self.tokens:
            per_token = self.data.token_stats[self.measure.value]
            mask = self.data.token_stats.get("mask")
            values = np.where(mask, per_token, np.nan) if mask is not None else per_token
            return np.nanmean(values, axis=1)
        z_t, z_s = self.data.require_logits()
        return lm.divergences(z_t, z_s, self.temperature.value, measures=[self.measure.value])[self.measure.value]

    def visible_samples(self) -> np.ndarray:
        """Indices that pass the class and correctness filters, in the chosen order."""
        keep = np.ones(self.run.n_samples, dtype=bool)
        if not self.tokens and self.class_filter.value >= 0 and self.data.labels is not None:
            keep &= self.data.labels == self.class_filter.value
        if not self.tokens and self.correctness.value != "all":
            keep &= correctness_masks(self.data.z_t, self.data.z_s, self.data.labels)[self.correctness.value]
        index = np.flatnonzero(keep)
        if self.sort.value == SORTS[0]:
            index = index[np.argsort(-self.values[index], kind="stable")]
        elif self.sort.value == SORTS[1]:
            index = index[np.argsort(self.values[index], kind="stable")]
        return index

    def refresh(self) -> None:
        """Recompute the per-sample values and redraw everything but the drill-down."""
        self.values = self._per_sample()
        T, measure = self.temperature.value, self.measure.value
        visible = self.visible_samples()
        self._refreshing = True  # replacing the options fires a selection event; the current sample is kept instead
        try:
            self.table.options = [(self._row_label(i), int(i)) for i in visible[:TABLE_ROWS]]
        finally:
            self._refreshing = False
        self.figures["histogram"] = views.divergence_histogram(self.values[visible], measure=measure, T=T)
        self.figures["summary"] = views.summary_card(self.data.summary(self.temperature.value))
        show(self.outputs["histogram"], self.figures["histogram"])
        show(self.outputs["summary"], self.figures["summary"])
        if len(visible):
            self.select(int(visible[0]) if self.selected not in set(visible.tolist()) else self.selected)

    def _row_label(self, i: int) -> str:
        text = f"#{i:<5} {self.measure.value} = {self.values[i]:.4f}"
        if not self.tokens:
            names = self.data.class_names or [str(c) for c in range(self.data.z_t.shape[1])]
            label = f"label {names[self.data.labels[i]]}, " if self.data.labels is not None else ""
            text += f"   {label}teacher {names[self.data.z_t[i].argmax()]}, student {names[self.data.z_s[i].argmax()]}"
        return text

    def select(self, index: int) -> None:
        """Drill into one sample (also what a click in the table does)."""
        self.selected = index
        if self.tokens:
            stats = self.data.token_stats
            tokens = (self.data.tokens or [[str(t) for t in range(stats["kl"].shape[1])] for _ in range(self.run.n_samples)])[index]
            fig = views.token_strip(
                tokens, stats[self.measure.value][index], measure=self.measure.value,
                teacher_top=(stats["teacher_topk_ids"][index], stats["teacher_topk_probs"][index]),
                student_top=(stats["student_topk_ids"][index], stats["student_topk_probs"][index]), vocab=self.data.vocab(),
            )
        else:
            target = int(self.data.labels[index]) if self.data.labels is not None else None
            fig = views.sample_drilldown(self.data.z_t[index], self.data.z_s[index], T=self.temperature.value, target=target,
                                         class_names=self.data.class_names, thumbnail=self.data.thumbnail(index),
                                         sample_index=index)
        self.figures["detail"] = fig
        show(self.outputs["detail"], fig)
        if self.table.value != index and index in [value for _, value in self.table.options]:
            self.table.value = index

    def _on_change(self, _change: dict) -> None:
        self.refresh()

    def _on_select(self, change: dict) -> None:
        if not self._refreshing and change["new"] is not None and change["new"] != self.selected:
            self.select(int(change["new"]))
