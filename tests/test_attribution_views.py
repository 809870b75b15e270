"""Attribution views and the AttributionExplorer: the numbers drawn are the metrics', text is escaped, clicks select."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bert_pair

import kdviz
from kdviz.demo.data import load_digits
from kdviz.demo.weights import load_pair
from kdviz.errors import MissingDataError
from kdviz.metrics import attribution_agreement as ag
from kdviz.readers.attribution import AttributionData
from kdviz.views import attribution as views
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
    shown = [t for t in text.ravel() if t] + [t for t in np.asarray(fig.data[1].text).ravel() if t]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "<script>alert(1)</script>" not in shown
    assert len(shown) == 3 * 14  # 14 real tokens × (teacher, student: the first heatmap; difference: the second)
    both = (text != "") & (np.asarray(fig.data[1].text) != "")
    assert not both.any()  # a label is drawn by one heatmap only, never twice on the same cell
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
    counts = [int((stored.classes == c).sum()) for c in np.unique(stored.classes)]
    assert list(fig.data[0].customdata) == counts
    # each class's label is escaped and carries its n under it, on the axis (no text inside a bar, which the
    # interval would cross)
    assert "&lt;b&gt;3&lt;/b&gt;<br><span style='font-size:11px'>n=" in " ".join(fig.data[0].x)
    assert [label.rsplit("n=", 1)[1].removesuffix("</span>") for label in fig.data[0].x] == [str(n) for n in counts]
    assert fig.data[0].text is None


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


def test_explorer_sorts_filters_and_follows_clicks(cnn_data):
    explorer = AttributionExplorer(cnn_data.run, metric="spearman")
    method, target, metric = explorer.selection_key
    assert (method, target) == ("integrated_gradients", "teacher_pred")
    values = cnn_data.agreement(method, target, metric)
    index = cnn_data.stored(method, target).index
    least = int(index[np.nanargmin(values)])
    open_listed = explorer.selection.sample in explorer.visible_samples()[:60].tolist()
    assert explorer.listed()[0 if open_listed else 1] == least  # least agreement first (after the open sample)
    explorer.samples.value = least
    assert explorer.selected == least == explorer.selection.sample
    assert set(explorer.figures()) == {"overview", "pair", "histogram", "scatter", "classes"}
    assert f"sample {least}" in explorer.figures()["pair"].layout.title.text
    explorer.method = "grad_cam"
    assert "Grad-CAM" in explorer.figures()["pair"].layout.title.text
    scatter = explorer.figures()["scatter"]
    trace = next(i for i, t in enumerate(scatter.data) if t.customdata is not None and len(t.customdata))
    expected = int(np.ravel(scatter.data[trace].customdata[0])[0])
    explorer.panes["scatter"].click_data = {"points": [{"curveNumber": trace, "customdata": [expected]}]}
    assert explorer.selected == expected and f"sample {expected}" in explorer.figures()["pair"].layout.title.text
    # a histogram bar: list only its samples, and open the least agreeing one
    defined = views.defined_samples(cnn_data, "grad_cam", target, metric)
    explorer.panes["histogram"].click_data = {"points": [{"curveNumber": 0, "pointNumbers": [0, 1, 2]}]}
    members = defined[[0, 1, 2]]
    assert sorted(explorer.listed()) == sorted(members.tolist()) and explorer.show_all.visible
    member_values = cnn_data.agreement("grad_cam", target, metric)[np.searchsorted(index, members)]
    assert explorer.selected == int(members[np.argmin(member_values)])
    explorer.show_bin(None)
    assert len(explorer.listed()) == N
    explorer.order = "sample index"
    assert explorer.listed() == sorted(explorer.listed())
    explorer.target_menu.value = "label"
    assert explorer.method == "input_x_gradient" and list(explorer.method_menu.options.values()) == ["input_x_gradient"]
    explorer.threshold_slider.value = 0.9
    assert explorer.threshold == 0.9 and "right of 0.9" in explorer.figures()["scatter"].layout.title.text


def test_explorer_on_a_text_run(bert_data):
    explorer = AttributionExplorer(bert_data.run)
    assert explorer.selection_key == ("integrated_gradients", "teacher_pred", "spearman")
    assert explorer.figures()["pair"].data[0].type == "heatmap"
