"""Features page: CKA between every teacher and student layer (click a cell to open that pair), CKA within each
model, the chosen pair's joint projection and relation matrices, and projector fit along the suggested map."""

from __future__ import annotations

from typing import Any

import panel as pn

from kdviz.app.pages.base import Page, clicked_point, heading, plot
from kdviz.errors import MissingDataError
from kdviz.metrics.features import suggest_layer_map
from kdviz.views import features as views
from kdviz.views.layers import short_name
from kdviz.views.run_data import alignment_scores, feature_layer_map, first_labels, pooled_features

RELATION_SAMPLES = 200  # the projection and relation matrices use the first samples of the run


class FeaturesPage(Page):
    title = "Features"
    watches = ()  # dataset-level views: the sample does not change them

    def build(self) -> list[Any]:
        run = self.run
        if not run.teacher.feature_names or not run.student.feature_names:
            raise MissingDataError(f"run {run.name!r} has no captured features; capture with layers=[...] (module paths or "
                                   "globs of both models) to compare their representations")
        self.samples = min(RELATION_SAMPLES, run.n_samples)
        self.estimator = pn.widgets.Select(label="measure", options={"debiased CKA": True, "biased CKA": False}, value=True,
                                           width=180)
        self.conv = pn.widgets.Select(label="conv maps", options={"flatten": "flatten", "average-pool": "pool"},
                                      value="flatten", width=160)
        self.tokens = pn.widgets.Select(label="tokens", options={"mean over tokens": "mean", "tokens as samples": "tokens"},
                                        value="mean", width=180)
        self.teacher_layer = pn.widgets.Select(label="teacher layer", options=run.teacher.feature_names, width=300)
        self.student_layer = pn.widgets.Select(label="student layer", options=run.student.feature_names, width=300)
        self.panes = {key: plot() for key in ("cka", "within", "projection", "relations", "scores")}
        for control in (self.estimator, self.conv, self.tokens):
            control.param.watch(lambda _e: self._guarded(self.redraw), "value")
        for control in (self.teacher_layer, self.student_layer):
            control.param.watch(lambda _e: self._guarded(self.draw_pair) if not self._updating else None, "value")
        self.panes["cka"].param.watch(self._cell_clicked, "click_data")
        self.redraw()
        return [
            heading(f"Features: {run.name}"),
            pn.Row(self.estimator, self.conv, self.tokens),
            self.panes["cka"], self.panes["within"],
            pn.Row(self.teacher_layer, self.student_layer),
            self.panes["projection"], self.panes["relations"], self.panes["scores"],
        ]

    def redraw(self) -> None:
        run = self.run
        self.result = self.library.cka(self.selection.run, self.selection.step, unbiased=self.estimator.value,
                                       conv=self.conv.value, tokens=self.tokens.value)
        suggestion = suggest_layer_map(self.result["cross"])["pairs"]
        self.show_figure("cka", self.panes["cka"], views.cka_heatmap(self.result, suggested=suggestion,
                                                                     layer_map=feature_layer_map(run)))
        self.show_figure("within", self.panes["within"], views.within_model_cka(self.result))
        student, teacher = suggestion[-1]
        self._choose(self.result["teacher_layers"][teacher], self.result["student_layers"][student])
        self.show_figure("scores", self.panes["scores"], views.pair_scores(
            alignment_scores(run, self.result, suggestion, samples=self.samples, conv=self.conv.value)))

    def _choose(self, teacher_layer: str, student_layer: str) -> None:
        with self.quietly():
            self.teacher_layer.value, self.student_layer.value = teacher_layer, student_layer
        self.draw_pair()

    def draw_pair(self) -> None:
        run, conv = self.run, self.conv.value
        x_t = pooled_features(run, "teacher", self.teacher_layer.value, slice(0, self.samples), conv=conv, tokens="mean")
        x_s = pooled_features(run, "student", self.student_layer.value, slice(0, self.samples), conv=conv, tokens="mean")
        labels = first_labels(run, self.samples)
        self.show_figure("projection", self.panes["projection"], views.joint_projection(x_t, x_s, labels, run.class_names))
        self.show_figure("relations", self.panes["relations"], views.relation_matrices(
            x_t, x_s, labels, teacher_name=self.teacher_layer.value, student_name=self.student_layer.value))

    def _cell_clicked(self, event: Any) -> None:
        """A heatmap cell names a (student, teacher) pair by its short layer names."""
        point = clicked_point(event.new)
        if point is None:
            return
        teacher = next((n for n in self.result["teacher_layers"] if short_name(n) == point.get("y")), None)
        student = next((n for n in self.result["student_layers"] if short_name(n) == point.get("x")), None)
        if teacher is not None and student is not None:
            self._guarded(lambda: self._choose(teacher, student))
