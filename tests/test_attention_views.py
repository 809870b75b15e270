"""Attention views and the AttentionExplorer on the demo runs (ViT, CNN, character LM) and on HF BERT pairs built from
configs: what reaches the browser, that the numbers shown are the metrics', escaping, and the token-grid layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import bert_pair
from plotly.colors import sample_colorscale
from torch import nn

import kdviz
from kdviz.adapters.layout import token_grid
from kdviz.errors import InputError, MissingDataError
from kdviz.metrics import attention as am
from kdviz.readers.attention import AttentionData
from kdviz.views import attention as views
from kdviz.views import theme
from kdviz.widgets import AttentionExplorer


def _bdata_shape(trace_z) -> tuple[int, ...]:
    return tuple(np.asarray(trace_z).shape)


def _bert_run(tmp_path, *, length: int, n: int = 6, tokens=None, pad: bool = True, name: str = "bert.kdviz",
              attention_samples="auto"):
    teacher, student = bert_pair(max_positions=max(64, length))
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 120, (n, length), generator=generator)
    mask = torch.ones_like(ids)
    if pad:
        mask[::2, -3:] = 0
    return kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": mask}, path=tmp_path / name, batch_size=4,
                         progress=False, layers=[], tokens=tokens, attention_samples=attention_samples)


# ---- shaping for the browser ----------------------------------------------------------------------------
def test_pool_map_keeps_rows_stochastic_and_sums_key_bins():
    rng = np.random.default_rng(0)
    a = rng.random((300, 300))
    a /= a.sum(1, keepdims=True)
    pooled, starts = views.pool_map(a, 128)
    assert pooled.shape == (128, 128) and starts[0] == 0 and len(starts) == 128
    np.testing.assert_allclose(pooled.sum(1), 1.0, atol=1e-12)
    ends = np.append(starts[1:], 300)
    i, j = 5, 77  # independent: mean over the query bin of the sum over the key bin
    expected = a[starts[i]:ends[i], starts[j]:ends[j]].sum(1).mean()
    assert pooled[i, j] == pytest.approx(expected, rel=1e-12)
    same, idx = views.pool_map(a[:50, :50], 128)
    assert same.shape == (50, 50) and list(idx) == list(range(50))


def test_thumbnail_is_uint8_at_most_32_and_scaled_to_its_maximum():
    a = np.zeros((512, 512))
    a[:, 0] = 1.0
    thumb = views.thumbnail(a)
    assert thumb.dtype == np.uint8 and thumb.shape == (32, 32)
    assert thumb[:, 0].tolist() == [255] * 32 and thumb[:, 1:].max() == 0


# ---- demo ViT ---------------------------------------------------------------------------------------------
def test_vit_head_grid_sends_uint8_thumbnails_and_colours_frames_by_the_summary(demo_runs):
    data = AttentionData(demo_runs["digits-vit"])
    fig = views.head_grid(data, 3, "entropy", selected={"teacher": (1, 2)})
    grids = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in grids] == ["teacher grid", "student grid"]
    payload = json.loads(fig.to_json())
    assert all(t["z"]["dtype"] == "u1" for t in payload["data"] if t["type"] == "heatmap")
    cell = min(views.THUMBNAIL, data.n_tokens)
    assert _bdata_shape(grids[0].z) == (4 * (cell + views.GAP) - views.GAP, 4 * (cell + views.GAP) - views.GAP)
    # hover values are the metric's entropy of each head on this sample
    heads = next(t for t in fig.data if t.name == "teacher heads")
    layer, head = heads.customdata[6]
    expected = am.attention_entropy(demo_runs["digits-vit"].teacher.attention(layer)[3])[head]
    assert f"{expected:.3f}" in heads.text[6]
    # one frame per head (an open square in the colour of its value), then one chosen-head mark per model: the
    # teacher's shown over head (1, 2), the student's hidden
    values = data.sample_summaries("teacher", 3, "entropy")
    lo = min(np.nanmin(data.sample_summaries(r, 3, "entropy")) for r in ("teacher", "student"))
    hi = max(np.nanmax(data.sample_summaries(r, 3, "entropy")) for r in ("teacher", "student"))
    assert heads.marker.symbol == "square-open" and len(heads.marker.color) == 4 * 4
    assert heads.marker.color[6] == sample_colorscale(theme.SUMMARY_SCALE, [(values[layer, head] - lo) / (hi - lo)])[0]
    scale = next(t for t in fig.data if t.name == "frame scale").marker
    assert (scale.cmin, scale.cmax, scale.showscale) == (lo, hi, True)
    assert len(fig.layout.shapes) == 2
    marks = fig.layout.shapes
    assert [mark.visible for mark in marks] == [True, False] and marks[0].line.width == 4
    assert views.grid_cell((marks[0].x0 + marks[0].x1) / 2, (marks[0].y0 + marks[0].y1) / 2, cell) == (1, 2)
    # moving the choice patches only the marks, to the same place a fresh grid would draw them
    views.select_in_grid(fig, data, {"teacher": (3, 0), "student": (1, 1)})
    fresh = views.head_grid(data, 3, "entropy", selected={"teacher": (3, 0), "student": (1, 1)})
    assert fig.layout.shapes == fresh.layout.shapes
    # clicking the composite image maps back to the head under the pixel
    x, y = heads.x[6], heads.y[6]
    assert views.grid_cell(x, y, cell) == (layer, head)


def test_vit_pair_view_shares_one_colour_scale_and_draws_the_query_over_the_image(demo_runs):
    run = demo_runs["digits-vit"]
    data = AttentionData(run)
    s_head = data.match(3, 1).student_of(0)
    fig = views.pair_view(data, (3, 0), (1, s_head), 3)
    t_map, s_map, diff = fig.data[:3]
    expected_t = run.teacher.attention(3)[3, 0].astype(np.float32)
    np.testing.assert_array_equal(np.asarray(t_map.z), expected_t)
    np.testing.assert_allclose(np.asarray(diff.z), expected_t - run.student.attention(1)[3, s_head].astype(np.float32))
    assert t_map.zmax == s_map.zmax and diff.zmin == -diff.zmax
    assert "(matched)" in fig.layout.annotations[1].text
    assert list(t_map.x[:2]) == ["0 CLS", "1 p0,0"]
    overlays = [t for t in fig.data if t.type == "heatmap" and t.dx == 2.0]
    assert len(overlays) == 3  # teacher, student, difference over the 8×8 image with a 4×4 patch grid
    np.testing.assert_allclose(np.asarray(overlays[0].z), expected_t[0, 1:].reshape(4, 4), rtol=1e-6)


def test_vit_layer_similarity_and_head_match_views_show_the_metric_values(demo_runs):
    run = demo_runs["digits-vit"]
    data = AttentionData(run)
    assert run.attention_samples == list(range(run.n_samples))  # 21 tokens: every sample keeps its exact maps
    fig = views.layer_similarity_view(data)
    matrix = np.asarray(fig.data[0].z)
    # the view averages the per-sample divergences stored at capture; the reference takes every exact map at once
    reference = am.layer_divergence([run.teacher.attention(i)[:] for i in range(4)],
                                    [run.student.attention(j)[:] for j in range(2)])
    np.testing.assert_allclose(matrix, reference, rtol=1e-5)
    assert f"all {run.n_samples} samples" in fig.layout.title.text
    names = [t.name for t in fig.data[1:]]
    assert names == ["run's layer map", "suggested (lowest-divergence monotone path)"]
    match_fig = views.head_match_view(data, 3, 1)
    divergence = am.head_divergence(run.teacher.attention(3)[:], run.student.attention(1)[:])
    np.testing.assert_allclose(np.asarray(match_fig.data[0].z), divergence, rtol=1e-5)
    match = am.match_heads(divergence)
    assert len(match_fig.data[1].x) == 2 and "teacher heads with no student partner" in match_fig.layout.title.text
    assert {int(t.split("h")[1]) for t in match_fig.data[1].y} == {t for t, _ in match.pairs}


def test_vit_rollout_view_overlays_the_cls_rollout(demo_runs):
    run = demo_runs["digits-vit"]
    data = AttentionData(run)
    fig = views.rollout_view(data, 2)
    expected = am.rollout([run.teacher.attention(i)[2] for i in range(4)])[0, 0, 1:].reshape(4, 4)
    overlay = next(t for t in fig.data if t.type == "heatmap" and t.dx is not None)
    np.testing.assert_allclose(np.asarray(overlay.z), expected, rtol=1e-5)


# ---- demo CNN and character LM ------------------------------------------------------------------------------
def test_cnn_spatial_overlay_reports_the_attention_transfer_distance(demo_runs):
    run = demo_runs["digits-cnn"]
    data = AttentionData(run)
    assert not data.has_attention and data.spatial_pairs == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    fig = views.spatial_overlay(data, 7)
    q_t = run.teacher.spatial("layer2")[7].astype(np.float64)
    q_s = run.student.spatial("layer2")[7].astype(np.float64)
    distance = np.sqrt(((q_t / np.linalg.norm(q_t) - q_s / np.linalg.norm(q_s)) ** 2).sum())
    assert f"AT distance {distance:.3f}" in fig.layout.annotations[1].text
    assert "over the first 256 of 500 samples</span><br><span" in fig.layout.title.text  # its reason on a line of its own
    assert "(read whole maps: capped for speed" in fig.layout.title.text
    assert "over all 500 samples" in views.spatial_overlay(AttentionData(run, max_samples=1000), 7).layout.title.text
    # the maps are opaque, the input drawn on top as its outline, and each layer pair has its colour bar
    maps = [t for t in fig.data if t.type == "heatmap"]
    assert len(maps) == 6 and sum(bool(t.showscale) for t in maps) == 3
    assert sum(t.type == "contour" for t in fig.data) == 6 * 2  # ink over a white halo, on every map
    with pytest.raises(MissingDataError, match="no attention maps"):
        views.head_grid(data)


def test_charlm_views_label_tokens_and_roll_out_from_the_last_token(demo_runs):
    run = demo_runs["charlm"]
    data = AttentionData(run)
    fig = views.pair_view(data, (1, 0), (0, 1), 0)
    vocab = run.meta["vocab"]
    first = vocab[int(run.array("inputs/token_ids")[0, 1])]
    assert fig.data[0].x[1].startswith("1 ") and len(set(fig.data[0].x)) == len(fig.data[0].x) == 64
    assert first.strip() == "" or fig.data[0].x[1].endswith(first)
    roll = views.rollout_view(data, 0)
    expected = am.rollout([run.teacher.attention(i)[0] for i in range(4)])[0, -1]
    np.testing.assert_allclose(np.asarray(roll.data[0].z)[0], expected, rtol=1e-5)
    assert "last token" in roll.layout.title.text
    window = views.pair_view(data, (1, 0), (0, 1), 0, window=(8, 24))
    assert _bdata_shape(window.data[0].z) == (16, 16) and window.data[0].x[0].startswith("8 ")
    with pytest.raises(InputError, match="token window"):
        views.pair_view(data, (1, 0), (0, 1), 0, window=(30, 30))
    with pytest.raises(InputError, match="no layer 9"):
        views.pair_view(data, (9, 0), (0, 0), 0)


# ---- HF BERT built from configs ------------------------------------------------------------------------------
def test_bert_views_cut_padding_and_use_the_mask_in_divergences(tmp_path):
    run = _bert_run(tmp_path, length=12)
    data = AttentionData(run)
    fig = views.pair_view(data, (3, 1), (1, 0), 0)  # sample 0 has 3 padded tokens
    assert _bdata_shape(fig.data[0].z) == (9, 9)
    mask = run.array("inputs/attention_mask")[:].astype(bool)
    reference = am.head_divergence(run.teacher.attention(3)[:], run.student.attention(1)[:], mask=mask)
    # the digest is taken from the float32 maps the model gave, the reference from the float16 exact maps stored
    np.testing.assert_allclose(data.pair_divergence(3, 1), reference, rtol=1e-4, atol=1e-6)
    unmasked = am.head_divergence(run.teacher.attention(3)[:], run.student.attention(1)[:])
    assert not np.allclose(reference, unmasked)
    for make in (lambda: views.head_grid(data, 1, "sink"), lambda: views.layer_similarity_view(data),
                 lambda: views.head_match_view(data, 3, 1), lambda: views.rollout_view(data, 1)):
        assert make().to_json()


def test_long_inputs_are_pooled_and_never_sent_whole(tmp_path):
    run = _bert_run(tmp_path, length=300, n=2, pad=False, attention_samples="all")
    data = AttentionData(run)
    pair = views.pair_view(data, (0, 0), (0, 0), 0)
    for trace in pair.data:
        assert max(_bdata_shape(trace.z)) <= 128
    raw = np.asarray(pair.data[0].customdata, dtype=np.float64)  # the attention itself, shown in the hover
    np.testing.assert_allclose(raw.sum(1), 1.0, atol=2e-3)
    # 128 bins are drawn on a log scale (auto), so the small levels that make up most of the map are visible
    np.testing.assert_allclose(np.asarray(pair.data[0].z, dtype=np.float64), np.log10(np.maximum(raw, 1e-4)), atol=1e-6)
    assert "pooled into 128 bins" in pair.layout.title.text and pair.data[0].x[0] == "0–1"
    assert "log colour scale" in pair.layout.title.text
    linear = views.pair_view(data, (0, 0), (0, 0), 0, scale="linear")
    np.testing.assert_allclose(np.asarray(linear.data[0].z, dtype=np.float64).sum(1), 1.0, atol=2e-3)
    rows = np.asarray(views.pair_view(data, (0, 0), (0, 0), 0, scale="row").data[1].z, dtype=np.float64)
    np.testing.assert_allclose(rows.max(1), 1.0, atol=1e-6)  # every query row scaled to its largest
    with pytest.raises(InputError, match="scale must be one of"):
        views.pair_view(data, (0, 0), (0, 0), 0, scale="sqrt")
    grid = views.head_grid(data, 0)
    assert all(np.asarray(t.z).dtype == np.uint8 for t in grid.data if t.type == "heatmap")
    full = run.teacher.attention(0)[0].astype(np.float32).nbytes * len(run.teacher.attention_layers)
    assert len(grid.to_json()) < full / 10 and len(pair.to_json()) < full / 10


def test_tokens_are_escaped_in_the_figures(tmp_path):
    tokens = [["<script>alert(1)</script>"] + [f"t{i}" for i in range(1, 8)] for _ in range(4)]
    run = _bert_run(tmp_path, length=8, n=4, tokens=tokens, pad=False)
    data = AttentionData(run)
    for fig in (views.pair_view(data, (0, 0), (0, 0), 0), views.rollout_view(data, 0)):
        text = fig.to_json()
        assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;\\u002fscript&gt;" in text


# ---- token layout --------------------------------------------------------------------------------------------
def test_token_grid_is_found_from_timm_attributes_hf_configs_and_image_inputs():
    timm_like = nn.Module()
    timm_like.patch_embed = nn.Module()
    timm_like.patch_embed.grid_size = (14, 14)
    assert token_grid(timm_like, 197) == {"prefix": 1, "grid": [14, 14]}
    assert token_grid(timm_like, 198) == {"prefix": 2, "grid": [14, 14]}  # DeiT: CLS + distillation token
    hf_like = nn.Module()
    hf_like.config = type("Config", (), {"image_size": 224, "patch_size": 16})()
    assert token_grid(hf_like, 197) == {"prefix": 1, "grid": [14, 14]}
    assert token_grid(nn.Module(), 17, (8, 1, 8, 8)) == {"prefix": 1, "grid": [4, 4]}
    assert token_grid(nn.Module(), 17, (8, 17)) is None  # text


def test_bert_run_records_no_token_grid_and_vit_demo_does(tmp_path, demo_runs):
    assert demo_runs["digits-vit"].teacher.token_grid == {"prefix": 1, "grid": [4, 4]}
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (4, 10))
    run = kdviz.capture(teacher, student, ids, path=tmp_path / "b.kdviz", progress=False, layers=[])
    assert run.teacher.token_grid is None


# ---- the explorer ---------------------------------------------------------------------------------------------
def click(pane, **point) -> None:
    """What plotly.js sends when a point of a Plotly pane is clicked."""
    pane.click_data = {"points": [point]}


def test_attention_explorer_follows_clicks_on_the_grid(demo_runs):
    explorer = AttentionExplorer(demo_runs["digits-vit"], max_samples=64)
    data = explorer.attention
    assert explorer.selected("teacher") == (3, 0)
    assert explorer.selected("student") == (1, data.match(3, 1).student_of(0))
    cell = min(views.THUMBNAIL, data.n_tokens)
    grid = explorer.figures()["grid"]
    teacher_trace = next(i for i, t in enumerate(grid.data) if t.name == "teacher grid")
    x, y = 2 * (cell + views.GAP) + 3, 1 * (cell + views.GAP) + 5  # inside layer 1, head 2
    click(explorer.panes["grid"], curveNumber=teacher_trace, x=x, y=y)
    assert explorer.selected("teacher") == (1, 2)
    # layer map S0 -> T1; teacher head 2 has no partner in the 4-to-2 matching, so the closest student head is shown
    assert data.match(1, 0).student_of(2) is None
    assert explorer.selected("student") == (0, int(np.argmin(data.pair_divergence(1, 0)[2])))
    assert "teacher L1 · head 2" in explorer.figures()["pair"].layout.annotations[0].text
    assert sum(shape.line.width == 4 for shape in explorer.figures()["grid"].layout.shapes) == 2  # both selections marked
    heads_trace = next(i for i, t in enumerate(explorer.figures()["grid"].data) if t.name == "student heads")
    student_heads = explorer.figures()["grid"].data[heads_trace]
    click(explorer.panes["grid"], curveNumber=heads_trace, x=0, y=0, customdata=list(student_heads.customdata[3]))
    assert explorer.selected("student") == tuple(student_heads.customdata[3])
    explorer.bottom_buttons.value = "heads"
    assert "Which student head follows" in explorer.figures()["bottom"].layout.title.text
    explorer.summary = "match"
    assert "divergence to matched head" in explorer.figures()["grid"].layout.title.text
    explorer.follow = False  # the student no longer follows a teacher choice
    chosen = explorer.selected("student")
    explorer.layer["teacher"].value = 2
    assert explorer.selected("teacher") == (2, 0) and explorer.selected("student") == chosen


def test_attention_explorer_windows_long_inputs(tmp_path):
    teacher, student = bert_pair(max_positions=160)
    ids = torch.randint(1, 120, (2, 160), generator=torch.Generator().manual_seed(5))
    run = kdviz.capture(teacher, student, ids, path=tmp_path / "long.kdviz", progress=False, layers=[],
                        attention_samples=[0])
    explorer = AttentionExplorer(run)
    assert explorer.window_slider.visible and not explorer.window_slider.disabled and explorer.window == (0, 160)
    # a sample kept only as a digest has no token window: the slider is disabled, not hidden, so the page keeps its
    # layout (a layout change lays out every Plotly figure of the document again)
    explorer.selection.sample = 1
    assert explorer.window_slider.visible and explorer.window_slider.disabled
    explorer.selection.sample = 0
    assert explorer.window_slider.visible and not explorer.window_slider.disabled
    pooled = explorer.figures()["pair"]
    explorer.window_slider.value = (20, 60)
    windowed = explorer.figures()["pair"]
    assert explorer.window == (20, 60) and windowed is not pooled
    assert np.asarray(windowed.data[0].z).shape == (40, 40)  # 40 tokens, unpooled
    assert "linear colour scale" in windowed.layout.title.text  # auto: 40 tokens are read on a linear scale
    explorer.scale_buttons.value = "log"
    assert explorer.scale == "log" and "log colour scale" in explorer.figures()["pair"].layout.title.text


def test_a_box_dragged_on_the_pair_view_opens_the_tokens_under_it(tmp_path):
    teacher, student = bert_pair(max_positions=400)
    ids = torch.randint(1, 120, (2, 400), generator=torch.Generator().manual_seed(5))
    run = kdviz.capture(teacher, student, ids, path=tmp_path / "long.kdviz", progress=False, layers=[],
                        attention_samples="all")
    explorer = AttentionExplorer(run)
    pooled = explorer.figures()["pair"]
    starts = pooled.layout.meta["bin_starts"]
    assert len(starts) == 128 and starts[0] == 0 and pooled.layout.meta["stop"] == 400
    assert "drag a box" in pooled.layout.title.text
    # a box from the middle of bin 10 to the middle of bin 19 (plotly's category range) covers bins 10..19
    explorer.panes["pair"].relayout_data = {"xaxis2.range[0]": 9.7, "xaxis2.range[1]": 19.2, "yaxis2.range[0]": 19.2,
                                            "yaxis2.range[1]": 9.7}
    assert explorer.window == (starts[10], starts[20])
    windowed = explorer.figures()["pair"]
    assert np.asarray(windowed.data[0].z).shape == (starts[20] - starts[10],) * 2  # each token, unpooled
    assert windowed.layout.meta["bin_starts"][0] == starts[10]
    # inside the window, one bin is one token: a second box narrows it to the tokens under it
    explorer.panes["pair"].relayout_data = {"xaxis.range[0]": 1.6, "xaxis.range[1]": 5.4}
    assert explorer.window == (starts[10] + 2, starts[10] + 6)
    explorer.panes["pair"].relayout_data = {"xaxis.autorange": True, "yaxis.autorange": True}  # double-click
    assert explorer.window == (0, 400)
    assert views.window_from_range({"bin_starts": [0, 4, 8], "stop": 12, "exact": True}, 0.6, 0.9) is None  # no whole bin
    assert views.window_from_range({"bin_starts": [0, 4, 8], "stop": 12, "exact": False}, -0.5, 2.5) is None  # digest only
    assert views.window_from_range({"bin_starts": [0, 4, 8], "stop": 12, "exact": True}, 2.5, -0.5) == (0, 12)


def test_attention_explorer_shows_attention_transfer_for_cnns_and_refuses_runs_without_maps(demo_runs, tmp_path, cnn_pair):
    explorer = AttentionExplorer(demo_runs["digits-cnn"])
    assert list(explorer.figures()) == ["spatial"]
    explorer.selection.sample = 4
    assert "sample 4" in explorer.figures()["spatial"].layout.title.text
    teacher, student = cnn_pair
    run = kdviz.capture(teacher, student, torch.randn(8, 1, 8, 8), path=tmp_path / "plain.kdviz", progress=False)
    with pytest.raises(MissingDataError, match="neither attention maps nor attention-transfer maps"):
        AttentionExplorer(run)


def test_value_relations_from_a_captured_value_projection_compare_across_models(tmp_path):
    """MiniLM's value relation: capture the value projections as features, then softmax(V Vᵀ/√d) per head."""
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (4, 10), generator=torch.Generator().manual_seed(3))
    run = kdviz.capture(teacher, student, ids, path=tmp_path / "v.kdviz", progress=False,
                        layers=["bert.encoder.layer.*.attention.self.value"], token_features="tokens")
    name_t, name_s = run.teacher.feature_names[-1], run.student.feature_names[-1]
    assert name_t.endswith("attention.self.value")
    values_t = run.teacher.features(name_t)[:]  # [N, T, H·d] = [4, 10, 32]
    seen = []
    hook = teacher.bert.encoder.layer[-1].attention.self.value.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        teacher.eval()(ids)
    hook.remove()
    direct = seen[0].numpy()
    np.testing.assert_allclose(values_t, direct, rtol=1e-4, atol=1e-5)
    rel_t = am.value_relation(values_t, heads=4)
    v = direct.reshape(4, 10, 4, 8).transpose(0, 2, 1, 3).astype(np.float64)
    logits = v @ v.transpose(0, 1, 3, 2) / np.sqrt(8)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(rel_t, expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)
    rel_s = am.value_relation(run.student.features(name_s)[:], heads=2)
    assert am.head_divergence(rel_t, rel_s).shape == (4, 2)
