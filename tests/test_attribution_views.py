"""Attribution views and the AttributionExplorer: the numbers drawn are the metrics', text is escaped, clicks select."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import plotly.callbacks as callbacks
import pytest
import torch
from conftest import bert_pair

import kdviz
from kdviz.demo.data import load_digits
from kdviz.demo.weights import load_pair
from kdviz.errors import MissingDataError
from kdviz.metrics import attribution_agreement as ag
from kdviz.views import attribution as views
from kdviz.views.attribution_data import AttributionData
from kdviz.widgets import AttributionExplorer

N = 60


@pytest.fixture(scope="module")
def cnn_data(tmp_path_factory):
    digits = load_digits()
    teacher, student, _ = load_pair("cnn")
    names = [f"<b>{c}</b>" if c == "3" else c for c in digits.class_names]  # markup in a class name must show as text
    run = kdviz.attribute(teacher, student, (digits.x_test, digits.y_test), path=tmp_path_factory.mktemp("v") / "cnn.kdviz",
                          samples=N, methods=["saliency", "integrated_gradients", "grad_cam"], class_names=names, progress=False)
    run = kdviz.attribute(teacher, student, (digits.x_test, digits.y_test), run=run, samples=N, target="label",
                          methods=["input_x_gradient"], progress=False)
    return AttributionData(run)


@pytest.fixture(scope="module")
def bert_data(tmp_path_factory):
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (6, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0
    tokens = [["<script>alert(1)</script>" if j == 2 else f"w{j}" for j in range(20)] for _ in range(6)]
    run = kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": mask}, layers=[], tokens=tokens,
                        path=tmp_path_factory.mktemp("v") / "bert.kdviz", progress=False)
    run = kdviz.attribute(teacher, student, {"input_ids": ids, "attention_mask": mask}, run=run, progress=False,
                          methods=["integrated_gradients", "attention_x_gradient"])
    return AttributionData(run)


def _image_traces(fig) -> list:
    return [t for t in fig.data if t.type == "heatmap" and t.hoverinfo != "skip"]


def test_pair_view_draws_each_map_scaled_and_their_difference(cnn_data):
    fig = views.attribution_pair(cnn_data, 5, "integrated_gradients")
    t_map, s_map = cnn_data.maps("integrated_gradients", "teacher_pred", 5)
    teacher, student, diff = (np.asarray(t.z, dtype=np.float64) for t in _image_traces(fig))
    np.testing.assert_allclose(teacher, t_map / np.abs(t_map).max(), atol=1e-6)
    np.testing.assert_allclose(student, s_map / np.abs(s_map).max(), atol=1e-6)
    np.testing.assert_allclose(diff, teacher - student, atol=1e-6)
    assert _image_traces(fig)[0].zmin == -_image_traces(fig)[0].zmax  # signed: a scale symmetric about 0
    cam = views.attribution_pair(cnn_data, 5, "grad_cam")
    assert _image_traces(cam)[0].zmin == 0
    row = cnn_data.row_of("integrated_gradients", "teacher_pred", 5)
    spearman = cnn_data.agreement("integrated_gradients", "teacher_pred", "spearman")[row]
    assert f"Spearman {spearman:.2f}" in fig.layout.title.text


def test_token_pair_view_escapes_tokens_and_cuts_padding(bert_data):
    fig = views.attribution_pair(bert_data, 1, "integrated_gradients")
    text = np.asarray(fig.data[0].text)
    shown = [t for t in text.ravel() if t]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "<script>alert(1)</script>" not in shown
    assert len(shown) == 3 * 14  # 14 real tokens × (teacher, student, difference)
    assert text.shape == (4, 16)  # 14 tokens fit one line of 16
    long = views.attribution_pair(bert_data, 0, "attention_x_gradient")
    assert np.asarray(long.data[0].text).shape == (8, 16)  # 20 tokens wrap onto two lines


def test_histogram_shows_the_defined_agreement_and_maps_clicks_to_samples(cnn_data):
    values = cnn_data.agreement("saliency", "teacher_pred", "topk_iou")
    fig = views.agreement_histogram(cnn_data, "saliency", "teacher_pred", "topk_iou", selected=4)
    np.testing.assert_allclose(np.asarray(fig.data[0].x), values[np.isfinite(values)])
    samples = views.defined_samples(cnn_data, "saliency", "teacher_pred", "topk_iou")
    assert len(samples) == len(fig.data[0].x)
    chance = views.CHANCE["topk_iou"]  # the "unrelated maps" line
    assert any(abs(shape.x0 - chance) < 1e-12 for shape in fig.layout.shapes)


def test_scatter_quadrants_count_what_fidelity_table_counts(cnn_data):
    fig = views.agreement_scatter(cnn_data, "integrated_gradients", "teacher_pred", "cosine", threshold=0.4)
    table = cnn_data.fidelity("integrated_gradients", "teacher_pred", "cosine", 0.4)
    counts = ag.quadrant_counts(table)
    texts = " ".join(a.text for a in fig.layout.annotations)
    for name, info in counts.items():
        assert f"<b>{name}</b><br>{info['count']} sample" in texts
    plotted = sum(len(t.x) for t in fig.data)
    assert plotted == np.isfinite(table["agreement"]).sum()
    z_t, z_s = cnn_data.logits("teacher"), cnn_data.logits("student")
    for trace in fig.data:
        for sample, margin in zip(trace.customdata, trace.y, strict=True):
            assert (margin > 0) == (z_t[sample].argmax() == z_s[sample].argmax())
    assert "&lt;b&gt;3&lt;/b&gt;" in [t.name for t in fig.data]


def test_class_bars_are_the_per_class_means(cnn_data):
    fig = views.class_agreement_bars(cnn_data, "grad_cam", "teacher_pred", "spearman")
    stored = cnn_data.stored("grad_cam", "teacher_pred")
    values = cnn_data.agreement("grad_cam", "teacher_pred", "spearman")
    means = [np.nanmean(values[stored.classes == c]) for c in np.unique(stored.classes)]
    np.testing.assert_allclose(np.asarray(fig.data[0].y), means)
    assert "&lt;b&gt;3&lt;/b&gt;" in list(fig.data[0].x)


def test_overview_and_head_importance(cnn_data, bert_data):
    fig = views.agreement_overview(cnn_data)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (3, 3)
    assert z[1, 0] == pytest.approx(np.nanmean(cnn_data.agreement("integrated_gradients", "teacher_pred", "spearman")))
    heads = views.head_importance_view(bert_data)
    teacher = np.asarray(heads.data[0].z)
    assert teacher.shape == (4, 4) and np.nansum(teacher) == pytest.approx(1.0)
    with pytest.raises(MissingDataError, match="attention_x_gradient"):
        views.head_importance_view(cnn_data)


def test_missing_attributions_and_samples_say_what_to_do(cnn_data, tmp_path):
    digits = load_digits()
    teacher, student, _ = load_pair("cnn")
    bare = kdviz.capture(teacher, student, (digits.x_test[:8], digits.y_test[:8]), path=tmp_path / "bare.kdviz", progress=False)
    with pytest.raises(MissingDataError, match=r"kdviz\.attribute"):
        AttributionData(bare)
    with pytest.raises(MissingDataError, match="was not attributed"):
        views.attribution_pair(cnn_data, N + 10, "saliency")


def _click(widget, trace_index: int, point: int) -> None:
    trace = widget.data[trace_index]
    trace._dispatch_on_click(callbacks.Points([point], [trace_index], [0], [0], trace.name), callbacks.InputDeviceState())


def test_explorer_sorts_filters_and_follows_clicks(cnn_data):
    with contextlib.redirect_stdout(io.StringIO()):
        explorer = AttributionExplorer(cnn_data.run, metric="spearman")
        method, target, metric = explorer.selection
        assert (method, target) == ("integrated_gradients", "teacher_pred")
        values = cnn_data.agreement(method, target, metric)
        listed = [value for _, value in explorer.samples.options]
        assert listed[0] == int(cnn_data.stored(method, target).index[np.nanargmin(values)])  # least agreement first
        assert explorer.selected == listed[0] and set(explorer.figures) == {"pair", "histogram", "scatter", "classes"}
        explorer.method.value = "grad_cam"
        assert "Grad-CAM" in explorer.figures["pair"].layout.title.text
        scatter_trace = 1
        expected = int(explorer.scatter.data[scatter_trace].customdata[0])
        _click(explorer.scatter, scatter_trace, 0)
        assert explorer.selected == expected and f"sample {expected}" in explorer.figures["pair"].layout.title.text
        _click(explorer.histogram, 0, 0)  # one point of a bar: list only that bar's samples
        assert explorer.bin_samples is not None and [v for _, v in explorer.samples.options] == explorer.bin_samples.tolist()
        explorer.show_bin(None)
        assert len(explorer.samples.options) == N
        explorer.target.value = "label"
        assert explorer.method.value == "input_x_gradient" and [m for _, m in explorer.method.options] == ["input_x_gradient"]
        explorer.threshold.value = 0.9
        assert "right of 0.9" in explorer.figures["scatter"].layout.title.text


def test_explorer_on_a_text_run(bert_data):
    with contextlib.redirect_stdout(io.StringIO()):
        explorer = AttributionExplorer(bert_data.run)
    assert explorer.selection == ("integrated_gradients", "teacher_pred", "spearman")
    assert explorer.figures["pair"].data[0].type == "heatmap"
