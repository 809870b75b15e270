"""Every logit view renders from the demo runs (image and language model), with escaped text and stated conventions."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from kdviz.metrics import calibration, classwise
from kdviz.metrics import logits as lm
from kdviz.metrics.summary import logit_summary
from kdviz.readers.logits import LogitData
from kdviz.views import logits as views

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def cnn(demo_runs):
    return LogitData.from_run(demo_runs["digits-cnn"])


@pytest.fixture(scope="module")
def charlm(demo_runs):
    return LogitData.from_run(demo_runs["charlm"])


def all_text(fig: go.Figure) -> str:
    return json.dumps(fig.to_plotly_json(), default=str)


def test_histogram_marks_mean_median_and_states_the_convention(cnn):
    values = lm.kl(cnn.z_t, cnn.z_s, 4.0, t2_scale=True)
    fig = views.divergence_histogram(values, measure="kl", T=4.0, t2_scale=True, selected=3)
    text = all_text(fig)
    assert f"mean {values.mean():.3g}" in text and f"median {np.median(values):.3g}" in text
    assert fig.layout.xaxis.title.text == "forward KL(p_t‖p_s) at T=4 (nats), ×T² as in the KD loss"
    np.testing.assert_allclose(fig.data[0].x, values)
    assert "sample 3" in text


def test_histogram_lines_sit_at_the_mean_median_and_selected_value(cnn):
    values = lm.kl(cnn.z_t, cnn.z_s, 2.0)
    fig = views.divergence_histogram(values, measure="kl", T=2.0, selected=5)
    lines = {shape.line.dash or "solid": shape.x0 for shape in fig.layout.shapes if shape.type == "line"}
    np.testing.assert_allclose([lines["dash"], lines["dot"], lines["solid"]],
                               [values.mean(), np.median(values), values[5]])
    assert all(shape.yref == "y domain" and (shape.y0, shape.y1) == (0, 1) for shape in fig.layout.shapes)


def test_logit_data_remembers_values_per_measure_and_temperature(demo_runs):
    data = LogitData.from_run(demo_runs["digits-cnn"])
    first = data.per_sample("kl", 4.0)
    assert data.per_sample("kl", 4.0) is first and not first.flags.writeable  # shared between sessions: read-only
    np.testing.assert_allclose(first, lm.kl(data.z_t, data.z_s, 4.0))
    np.testing.assert_allclose(data.per_sample("kl", 2.0), lm.kl(data.z_t, data.z_s, 2.0))
    summary = data.summary(4.0)
    summary["kl_T"] = -1.0  # a caller's copy: the remembered summary is unchanged
    assert data.summary(4.0)["kl_T"] == pytest.approx(logit_summary(data.z_t, data.z_s, data.labels, 4.0)["kl_T"])
    for T in np.linspace(0.5, 20, 40):  # bounded: old temperatures are dropped
        data.per_sample("kl", float(T))
    assert len(data.memo) <= data.memo.size == 32


def test_drilldown_marks_target_and_dark_knowledge(cnn):
    i = 7
    fig = views.sample_drilldown(cnn.z_t[i], cnn.z_s[i], T=4.0, target=int(cnn.labels[i]), class_names=cnn.class_names,
                                 thumbnail=cnn.thumbnail(i), sample_index=i)
    bars = [trace for trace in fig.data if isinstance(trace, go.Bar)]
    assert [b.name for b in bars] == ["teacher", "student"]
    assert bars[0].x[0] == cnn.class_names[cnn.labels[i]]  # target first
    p_t = np.exp(lm.log_probs(cnn.z_t[i][None].astype(np.float64), 4.0).numpy()[0])
    np.testing.assert_allclose(sorted(bars[0].y), sorted(p_t))
    assert f"teacher {1 - p_t[cnn.labels[i]]:.1%}" in all_text(fig)
    assert any(isinstance(trace, go.Heatmap) for trace in fig.data)  # the thumbnail


def test_class_level_views_and_calibration(cnn):
    agreement = views.agreement_matrix(classwise.agreement_matrix(cnn.z_t, cnn.z_s), cnn.class_names)
    assert np.asarray(agreement.data[0].z).sum() == cnn.n_samples
    quadrants = classwise.correctness_quadrants(cnn.z_t, cnn.z_s, cnn.labels)
    assert np.asarray(views.quadrant_chart(quadrants).data[0].z).sum() == cnn.n_samples
    ece_t, ece_s = calibration.ece(cnn.z_t, cnn.labels, 2.0), calibration.ece(cnn.z_s, cnn.labels, 2.0)
    reliability = views.reliability_diagram(ece_t, ece_s, T=2.0)
    assert f"ECE {ece_t['ece']:.3f}" in reliability.data[1].name
    measures = lm.divergences(cnn.z_t, cnn.z_s, 2.0, measures=["kl", "tv"])
    per_class = {m: classwise.per_class_mean(v, cnn.labels, 10) for m, v in measures.items()}
    heat = views.per_class_divergence(per_class, cnn.class_names, T=2.0)
    assert np.asarray(heat.data[0].z).shape == (2, 10)
    diff = views.class_mean_logit_difference(classwise.class_mean_logit_difference(cnn.z_t, cnn.z_s, cnn.labels), cnn.class_names)
    assert diff.data[0].zmid == 0


def test_summary_card_numbers_come_from_the_metrics(cnn):
    summary = logit_summary(cnn.z_t, cnn.z_s, cnn.labels, 4.0)
    fig = views.summary_card(summary)
    cells = fig.data[0].cells.values
    assert f"{summary['teacher_accuracy']:.1%}" in cells[1] and f"{summary['student_accuracy']:.1%}" in cells[2]
    assert f"{summary['kl_T1']:.4f}" in cells[3] and f"{summary['kl_T']:.4f}" in cells[3]
    assert summary["kl_T_scaled"] == pytest.approx(16 * summary["kl_T"])


def test_token_strip_for_the_language_model_run(charlm):
    stats = charlm.token_stats
    tokens = charlm.tokens[0]
    fig = views.token_strip(tokens, stats["kl"][0], teacher_top=(stats["teacher_topk_ids"][0], stats["teacher_topk_probs"][0]),
                            student_top=(stats["student_topk_ids"][0], stats["student_topk_probs"][0]), vocab=charlm.vocab())
    z = np.asarray(fig.data[0].z, dtype=float)
    np.testing.assert_allclose(z.reshape(-1)[: len(tokens)], stats["kl"][0])
    hover = fig.data[0].customdata[0][0]
    assert "teacher next:" in hover and "student next:" in hover


def test_a_language_model_sample_is_read_by_sample_and_shows_the_mass_outside_the_top_k(charlm, demo_runs):
    from kdviz.store.run import LazyArray

    # opening the Logits view reads the [N, T] divergences; each model's top-k is read one sample at a time
    assert isinstance(charlm.token_stats["teacher_topk_ids"], LazyArray)
    assert isinstance(charlm.token_stats["kl"], np.ndarray)
    fig = views.sample_detail(charlm, 3)
    hover = fig.data[0].customdata[0][1]
    tail = float(demo_runs["charlm"].teacher.token("tail_mass")[3, 1])
    assert f"outside top-{charlm.token_stats['teacher_topk_ids'].shape[-1]}</i> {tail:.1%}" in hover


def test_token_strip_stays_readable_for_2000_tokens_and_escapes_text():
    rng = np.random.default_rng(0)
    tokens = [XSS if i == 5 else f"w{i}" for i in range(2000)]
    fig = views.token_strip(tokens, rng.random(2000), per_row=50)
    grid = np.asarray(fig.data[0].z)
    assert grid.shape == (40, 50)  # wrapped into rows, not one 2000-wide line
    assert fig.layout.height >= 40 * 20
    labels = np.asarray(fig.data[0].text).reshape(-1)
    # 50 cells a row hold 2 characters each: a longer token is cut in its cell, escaped, and whole in the hover
    assert labels[5] == "&lt;…" and labels[7] == "w7" and labels[12] == "w…"
    assert "token 5: <b>&lt;script&gt;alert(1)&lt;/script&gt;</b>" in np.asarray(fig.data[0].customdata).reshape(-1)[5]
    assert "<script>" not in all_text(fig)
    auto = views.token_strip(tokens, rng.random(2000))  # by default: 96 characters a row over tokens of (90th pct.) 5
    assert np.asarray(auto.data[0].z).shape[1] == 16 and np.asarray(auto.data[0].text).reshape(-1)[1999] == "w1999"


def test_class_names_are_escaped_everywhere(cnn):
    names = [XSS] + [str(i) for i in range(1, 10)]
    figs = [
        views.agreement_matrix(classwise.agreement_matrix(cnn.z_t, cnn.z_s), names),
        views.sample_drilldown(cnn.z_t[0], cnn.z_s[0], target=0, class_names=names),
        views.class_mean_logit_difference(classwise.class_mean_logit_difference(cnn.z_t, cnn.z_s, cnn.labels), names),
    ]
    for fig in figs:
        assert "<script>" not in all_text(fig)


def test_every_view_wears_the_whole_plotly_white_template(cnn):
    import plotly.io as pio

    white = pio.templates["plotly_white"].to_plotly_json()
    for fig in (views.divergence_histogram(lm.kl(cnn.z_t, cnn.z_s)), views.sample_detail(cnn, 2),
                views.summary_card(cnn.summary(1.0))):
        assert fig.layout.template.to_plotly_json() == white
        assert json.loads(fig.to_json())["layout"]["template"]["layout"]["plot_bgcolor"] == "white"


def test_every_reader_keeps_one_bounded_read_only_memo(demo_runs, explained_demo_runs):
    from kdviz.readers.attention import AttentionData
    from kdviz.readers.attribution import AttributionData
    from kdviz.readers.memo import Memo

    vit = demo_runs["digits-vit"]
    attention = AttentionData.from_run(vit, max_samples=32)
    first = attention.pair_divergence(0, 0)
    assert attention.pair_divergence(0, 0) is first and not first.flags.writeable
    assert isinstance(attention.memo, Memo) and isinstance(LogitData.from_run(vit).memo, Memo)
    attribution = AttributionData.from_run(explained_demo_runs["digits-cnn"])
    method, target = attribution.default_selection()
    values = attribution.agreement(method, target, "spearman")
    assert attribution.agreement(method, target, "spearman") is values and not values.flags.writeable
    memo = Memo(2)
    for key in "abc":
        memo.get(key, lambda key=key: key * 2)
    assert len(memo) == 2 and memo.get("a", lambda: "recomputed") == "recomputed"  # the oldest was dropped
