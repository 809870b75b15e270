"""`AlignmentExplorer`: which student layer represents what which teacher layer represents, and how closely."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np

from kdviz.errors import MissingDataError
from kdviz.metrics.features import cka_matrix, suggest_layer_map
from kdviz.store import Run
from kdviz.views import features as views
from kdviz.views.run_data import alignment_scores, feature_layer_map, first_labels, pooled_features
from kdviz.views.text import escape_label
from kdviz.widgets._display import StepControl, figure_output, show

RELATION_SAMPLES = 200  # the projection and relation matrices use the first samples of the run, sorted by class


class AlignmentExplorer(StepControl, widgets.VBox):
    """Controls: estimator (debiased / biased CKA), pooling of conv maps and token features, and the layer pair
    (teacher layer, student layer; the cell of the heatmap) whose projection and relation matrices are shown.
    Below: projector R² and mutual-kNN bars for the suggested layer map. ``explorer.figures`` holds the figures."""

    def __init__(self, run: Run | str, *, samples: int = RELATION_SAMPLES, step: int | None = None) -> None:
        self.run = self._open_at_step(run, step)
        if not self.run.teacher.feature_names or not self.run.student.feature_names:
            raise MissingDataError("this run has no captured features; capture with layers=[...] to explore alignment")
        self.samples = min(samples, self.run.n_samples)
        self.estimator = widgets.Dropdown(options=[("debiased CKA", True), ("biased CKA", False)], value=True, description="measure")
        self.conv = widgets.Dropdown(options=[("flatten conv maps", "flatten"), ("average-pool conv maps", "pool")],
                                     value="flatten", description="conv")
        self.tokens = widgets.Dropdown(options=[("mean over tokens", "mean"), ("tokens as samples", "tokens")],
                                       value="mean", description="tokens")
        self.teacher_layer = widgets.Dropdown(options=self.run.teacher.feature_names, description="teacher layer")
        self.student_layer = widgets.Dropdown(options=self.run.student.feature_names, description="student layer")
        self.outputs = {name: figure_output() for name in ("cka", "within", "projection", "relations", "scores")}
        self.figures: dict[str, Any] = {}
        self.result: dict[str, Any] = {}
        self.suggestion: dict[str, Any] = {}
        super().__init__([
            widgets.HTML(f"<h3>Features: {escape_label(self.run.name)}</h3>"),
            *self._step_widgets(),
            widgets.HBox([self.estimator, self.conv, self.tokens]),
            self.outputs["cka"], self.outputs["within"],
            widgets.HBox([self.teacher_layer, self.student_layer]),
            self.outputs["projection"], self.outputs["relations"], self.outputs["scores"],
        ])
        for control in (self.estimator, self.conv, self.tokens):
            control.observe(lambda _change: self.refresh(), names="value")
        for control in (self.teacher_layer, self.student_layer):
            control.observe(lambda _change: self.refresh_pair(), names="value")
        self.refresh()

    def _reload(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.result = cka_matrix(self.run, unbiased=self.estimator.value, conv=self.conv.value, tokens=self.tokens.value)
        self.suggestion = suggest_layer_map(self.result["cross"])
        self.figures["cka"] = views.cka_heatmap(self.result, suggested=self.suggestion["pairs"], layer_map=feature_layer_map(self.run))
        self.figures["within"] = views.within_model_cka(self.result)
        show(self.outputs["cka"], self.figures["cka"])
        show(self.outputs["within"], self.figures["within"])
        student, teacher = self.suggestion["pairs"][-1]
        self.select(self.result["teacher_layers"][teacher], self.result["student_layers"][student])
        self.figures["scores"] = views.pair_scores(self.pair_scores())
        show(self.outputs["scores"], self.figures["scores"])

    def select(self, teacher_layer: str, student_layer: str) -> None:
        """Show one layer pair (what clicking a heatmap cell means)."""
        self.teacher_layer.value, self.student_layer.value = teacher_layer, student_layer
        self.refresh_pair()

    def _features(self, role: str, name: str) -> np.ndarray:
        # one point per sample (tokens averaged), so the projection and relation matrices can be coloured by class
        return pooled_features(self.run, role, name, slice(0, self.samples), conv=self.conv.value, tokens="mean")

    def refresh_pair(self) -> None:
        x_t, x_s = self._features("teacher", self.teacher_layer.value), self._features("student", self.student_layer.value)
        labels = first_labels(self.run, self.samples)
        self.figures["projection"] = views.joint_projection(x_t, x_s, labels, self.run.class_names)
        self.figures["relations"] = views.relation_matrices(x_t, x_s, labels, teacher_name=self.teacher_layer.value,
                                                            student_name=self.student_layer.value)
        show(self.outputs["projection"], self.figures["projection"])
        show(self.outputs["relations"], self.figures["relations"])

    def pair_scores(self) -> list[dict[str, Any]]:
        """Projector R² and mutual-kNN overlap for each pair of the suggested layer map."""
        return alignment_scores(self.run, self.result, self.suggestion["pairs"], samples=self.samples, conv=self.conv.value)
