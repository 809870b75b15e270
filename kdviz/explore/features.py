"""`FeatureExplorer`: which student layer represents what which teacher layer represents, and how closely. CKA
between every teacher and student layer (click a cell to open that pair), CKA within each model, the chosen pair's
joint projection and relation matrices, and projector fit along the suggested layer map."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from kdviz.errors import MissingDataError
from kdviz.explore.base import Explorer, clicked_point, grid, heading, plot
from kdviz.metrics.features import suggest_layer_map
from kdviz.readers.features import alignment_scores, feature_layer_map, first_labels, pooled_features, summary_position
from kdviz.views import features as views
from kdviz.views.layers import short_name

RELATION_SAMPLES = 200  # the projection and relation matrices use the first samples of the run


class FeatureExplorer(Explorer):
    """Controls: the estimator (debiased or biased CKA), how conv maps and token features are pooled, and the layer
    pair whose projection and relation matrices are shown. ``result`` is the CKA result shown, ``suggestion`` its
    suggested layer map. A notebook explorer stores the CKA it computes in the run's cache; a served one never writes."""

    title = "Features"
    watches = ()  # dataset-level views: the sample does not change them

    unbiased = param.Boolean(default=True, label="measure", doc="debiased (U-centred) CKA, or the biased estimate")
    conv = param.Selector(default="flatten", objects=["flatten", "pool"], label="conv maps",
                          doc="flatten conv feature maps, or average-pool them over space")
    tokens = param.Selector(default="mean", objects=["mean", "summary", "tokens"], label="tokens",
                            doc="average token features per sample, take its summary token, or count every token as a sample")
    teacher_layer = param.String(default="", label="teacher layer", doc="the teacher layer of the pair shown")
    student_layer = param.String(default="", label="student layer", doc="the student layer of the pair shown")

    def __init__(self, run: Any = None, *, samples: int = RELATION_SAMPLES, **kwargs: Any) -> None:
        self.relation_samples = samples
        super().__init__(run, **kwargs)

    def build(self) -> list[Any]:
        run = self.run
        if not run.teacher.feature_names or not run.student.feature_names:
            raise MissingDataError(f"run {run.name!r} has no captured features; capture with layers=[...] (module paths or "
                                   "globs of both models) to compare their representations")
        self.samples = min(self.relation_samples, run.n_samples)
        self.estimator = self.control("unbiased", options={"debiased CKA": True, "biased CKA": False}, width=180,
                                      css_classes=["kd-estimator"])
        self.conv_menu = self.control("conv", options={"flatten": "flatten", "average-pool": "pool"}, width=160)
        pooled = bool(run.teacher.pooled_names or run.student.pooled_names)
        summary = "last token" if summary_position(run) == "last" else "first token (CLS)"
        token_options = {"mean over tokens": "mean", summary: "summary"}
        if not pooled:
            token_options["tokens as samples"] = "tokens"
        self.tokens_menu = self.control("tokens", options=token_options, width=180)
        # each menu only where it changes something: token features [N, T, D] to pool, conv maps [N, C, H, W]
        ranks = {len(run.teacher.features(name).shape) for name in run.teacher.feature_names}
        self.tokens_menu.visible = pooled or run.task == "tokens" or 3 in ranks
        self.conv_menu.visible = 4 in ranks
        pooling_note = [pn.pane.Markdown(
            f"*Token features were pooled while capturing: each sample keeps its mean over real tokens and its {summary}. "
            "Capture with `token_features=\"tokens\"` to count every token as a sample.*", margin=(0, 10))] if pooled else []
        with self.quietly():
            self.teacher_layer, self.student_layer = run.teacher.feature_names[-1], run.student.feature_names[-1]
        self.teacher_menu = self.control("teacher_layer", options=run.teacher.feature_names, width=300)
        self.student_menu = self.control("student_layer", options=run.student.feature_names, width=300)
        self.panes = {key: plot() for key in ("cka", "within", "projection", "relations", "scores")}
        self.panes["cka"].param.watch(self._cell_clicked, "click_data")
        self.redraw()
        self.sidebar(self.estimator, self.conv_menu, self.tokens_menu, self.teacher_menu, self.student_menu)
        return [
            heading(f"Features: {run.name}"), *pooling_note,
            grid(self.panes["cka"], self.panes["scores"]), self.panes["within"],
            grid(self.panes["projection"], self.panes["relations"]),
        ]

    def state_changed(self, names: set[str]) -> None:
        if names & {"unbiased", "conv", "tokens"}:
            self.redraw()
        elif names & {"teacher_layer", "student_layer"}:
            self.draw_pair()

    def redraw(self) -> None:
        run = self.run
        self.result = self.library.cka(self.selection.run, self.selection.step, unbiased=self.unbiased, conv=self.conv,
                                       tokens=self.tokens)
        self.suggestion = suggest_layer_map(self.result["cross"])
        pairs = self.suggestion["pairs"]
        self.show_figure("cka", self.panes["cka"], views.cka_heatmap(self.result, suggested=pairs,
                                                                     layer_map=feature_layer_map(run)))
        self.show_figure("within", self.panes["within"], views.within_model_cka(self.result))
        student, teacher = pairs[-1]
        self.select(self.result["teacher_layers"][teacher], self.result["student_layers"][student])
        self.show_changed("scores", self.panes["scores"], (tuple(map(tuple, pairs)), self.conv, self.tokens),
                          lambda: views.pair_scores(self.pair_scores()))  # the fits depend on the pairs, not the estimator

    def pair_scores(self) -> list[dict[str, Any]]:
        """Projector R² and mutual-kNN overlap for each pair of the suggested layer map."""
        return alignment_scores(self.run, self.result, self.suggestion["pairs"], samples=self.samples, conv=self.conv)

    def select(self, teacher_layer: str, student_layer: str) -> None:
        """Show one layer pair (what clicking a heatmap cell does)."""
        with self.quietly():
            self.teacher_layer, self.student_layer = teacher_layer, student_layer
        self.draw_pair()

    def draw_pair(self) -> None:
        """The chosen pair's projection and relation matrices (not drawn again for the pair they show already: an
        estimator change keeps the suggested pair)."""
        inputs = (self.teacher_layer, self.student_layer, self.conv)
        if self.showing("projection", inputs) and self.showing("relations", inputs):
            return  # before reading the features again
        run, conv = self.run, self.conv
        x_t = pooled_features(run, "teacher", self.teacher_layer, slice(0, self.samples), conv=conv, tokens="mean")
        x_s = pooled_features(run, "student", self.student_layer, slice(0, self.samples), conv=conv, tokens="mean")
        labels = first_labels(run, self.samples)
        note = self.pooling_note(len(x_t))
        self.show_changed("projection", self.panes["projection"], inputs,
                          lambda: views.joint_projection(x_t, x_s, labels, run.class_names, note=note))
        self.show_changed("relations", self.panes["relations"], inputs, lambda: views.relation_matrices(
            x_t, x_s, labels, teacher_name=self.teacher_layer, student_name=self.student_layer, note=note))

    def pooling_note(self, shown: int) -> str:
        """What one point of the projection is, and why only ``shown`` of the run's samples are drawn."""
        run = self.run
        point = "one point per text: its features averaged over its real tokens" if run.task == "tokens" else ""
        limit = (f"the first {shown:,} of {run.n_samples:,} samples: a relation matrix grows as their square<br>"
                 "(FeatureExplorer(run, samples=N) draws more)" if shown < run.n_samples else "")
        return "<br>".join(part for part in (point, limit) if part)  # a line each: the figure may be half the page wide

    def _cell_clicked(self, event: Any) -> None:
        """A heatmap cell names a (student, teacher) pair by its short layer names."""
        point = clicked_point(event.new)
        if point is None:
            return
        teacher = next((n for n in self.result["teacher_layers"] if short_name(n) == point.get("y")), None)
        student = next((n for n in self.result["student_layers"] if short_name(n) == point.get("x")), None)
        if teacher is not None and student is not None:
            self.guarded(lambda: self.select(teacher, student))
