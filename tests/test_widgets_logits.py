"""The logit explorer and the temperature lab build and respond to control changes, as a notebook user's clicks would."""

from __future__ import annotations

import numpy as np
import pytest

from kdviz.explore.temperature_lab import parse_logits
from kdviz.metrics import logits as lm
from kdviz.metrics.teaching import kd_gradient_norms
from kdviz.views.teaching import modes_figure
from kdviz.widgets import LogitExplorer, TemperatureLab


def test_logit_explorer_responds_to_temperature_and_filters(demo_runs):
    run = demo_runs["digits-cnn"]
    explorer = LogitExplorer(run, T=1.0)
    z_t, z_s = run.teacher.logits[:], run.student.logits[:]
    np.testing.assert_allclose(explorer.values, lm.kl(z_t, z_s, 1.0))
    before = np.asarray(explorer.figures()["histogram"].data[0].x).copy()
    explorer.temperature.value = 8.0  # the slider moves the shared temperature
    assert explorer.selection.T == 8.0
    np.testing.assert_allclose(explorer.values, lm.kl(z_t, z_s, 8.0))
    assert not np.allclose(np.asarray(explorer.figures()["histogram"].data[0].x), before)
    # the list shows the most divergent samples first (after the open sample), and choosing one drills into it
    explorer.selection.sample = int(np.argmax(explorer.values))
    listed = explorer.listed()
    assert listed[0] == int(np.argmax(explorer.values)) and explorer.values[listed[1]] >= explorer.values[listed[2]]
    explorer.samples.value = listed[3]
    assert explorer.selection.sample == listed[3]
    assert f"Sample {listed[3]}" in explorer.figures()["detail"].layout.title.text
    # the drilled-into sample stays open when the temperature changes
    explorer.selection.T = 6.0
    assert explorer.selection.sample == listed[3] and f"Sample {listed[3]}" in explorer.figures()["detail"].layout.title.text
    assert "at T=6 " in explorer.figures()["detail"].layout.title.text
    # filters: the list holds the open sample, then only the samples that pass
    explorer.class_filter.value = 3
    assert explorer.class_index == 3 and len(explorer.visible) > 0
    assert all(run.labels[i] == 3 for i in explorer.visible)
    open_sample = explorer.selection.sample
    expected = explorer.visible[:40].tolist()
    assert explorer.listed() == (expected if open_sample in expected else [open_sample, *expected])
    explorer.class_index = -1
    explorer.correctness = "teacher right, student wrong"
    labels = run.labels[:]
    assert len(explorer.visible) and all(z_t[i].argmax() == labels[i] != z_s[i].argmax() for i in explorer.visible)
    explorer.measure_menu.value = "tv"
    np.testing.assert_allclose(explorer.values, lm.tv(z_t, z_s, 6.0))


def test_renyi_divergence_with_its_order_in_the_logit_explorer(demo_runs):
    run = demo_runs["digits-cnn"]
    explorer = LogitExplorer(run, T=2.0)
    assert not explorer.alpha_slider.visible  # α is offered only with Rényi
    explorer.measure = "renyi"
    assert explorer.alpha_slider.visible
    z_t, z_s = run.teacher.logits[:], run.student.logits[:]
    np.testing.assert_allclose(explorer.values, lm.renyi(z_t, z_s, 2.0, alpha=0.5))
    explorer.alpha_slider.value = 3.0
    assert explorer.alpha == 3.0
    np.testing.assert_allclose(explorer.values, lm.renyi(z_t, z_s, 2.0, alpha=3.0))
    assert explorer.figures()["histogram"].layout.xaxis.title.text == "Rényi D_3(p_t‖p_s) at T=2 (nats)"
    assert (explorer.values + 1e-12 >= lm.renyi(z_t, z_s, 2.0, alpha=0.5)).all()  # D_α grows with α


def test_histogram_click_lists_the_bar_and_opens_its_most_divergent_sample(demo_runs):
    explorer = LogitExplorer(demo_runs["digits-cnn"], T=4.0)
    finite = explorer.visible[np.isfinite(explorer.values[explorer.visible])]
    bar = [0, 1, 2, 5]  # plotly's pointNumbers: positions among the drawn values
    explorer.panes["histogram"].click_data = {"points": [{"curveNumber": 0, "pointNumbers": bar}]}
    members = finite[bar]
    assert explorer.show_all.visible and sorted(explorer.listed()) == sorted(members.tolist())
    assert explorer.selection.sample == int(members[np.argmax(explorer.values[members])])
    explorer.show_all.clicks += 1  # "list all samples"
    assert not explorer.show_all.visible and len(explorer.listed()) == 40


def test_the_class_views_follow_the_explorer(demo_runs):
    from kdviz.metrics import calibration, classwise

    run = demo_runs["digits-cnn"]
    explorer = LogitExplorer(run, T=2.0)
    z_t, z_s, y = run.teacher.logits[:], run.student.logits[:], run.labels[:]
    counts = np.asarray(explorer.figures()["classes"].data[0].z)
    np.testing.assert_array_equal(counts, classwise.agreement_matrix(z_t, z_s))
    explorer.class_view_menu.value = "correctness"
    assert np.asarray(explorer.figures()["classes"].data[0].z).sum() == run.n_samples
    explorer.class_view = "divergence"
    heat = explorer.figures()["classes"]
    kl_by_class = classwise.per_class_mean(lm.kl(z_t, z_s, 2.0), y, 10)
    assert heat.data[0].y[0] == lm.MEASURES["kl"]
    np.testing.assert_allclose([float(text) for text in heat.data[0].text[0]], kl_by_class, rtol=5e-3)  # 3 figures
    explorer.class_view = "calibration"
    explorer.selection.T = 4.0  # the temperature redraws the class view too
    expected = calibration.ece(z_s, y, 4.0)["ece"]
    assert "T=4" in explorer.figures()["classes"].layout.title.text
    assert any(f"ECE {expected:.3f}" in (trace.name or "") for trace in explorer.figures()["classes"].data)
    tokens = LogitExplorer(demo_runs["charlm"])
    assert "classes" not in tokens.figures()  # a language-model run has no classes to compare


def test_a_bad_setting_or_a_missing_run_is_refused_with_the_fix(demo_runs):
    from kdviz.errors import InputError

    with pytest.raises(InputError, match=r"does not take that setting.*measure"):
        LogitExplorer(demo_runs["digits-cnn"], measure="nonsense")
    with pytest.raises(InputError, match="needs a run"):
        LogitExplorer()
    with pytest.raises(InputError, match="sample 10000 is outside"):
        LogitExplorer(demo_runs["digits-cnn"], sample=10_000)
    with pytest.raises(InputError, match="temperature must be positive"):
        LogitExplorer(demo_runs["digits-cnn"], T=0.0)


def test_an_explorer_is_an_ipywidget_too(demo_runs):
    from jupyter_bokeh.widgets import BokehModel

    explorer = LogitExplorer(demo_runs["digits-cnn"])
    assert isinstance(explorer.ipywidget(), BokehModel)
    assert isinstance(TemperatureLab().ipywidget(), BokehModel)


def test_logit_explorer_on_a_language_model_run(demo_runs):
    explorer = LogitExplorer(demo_runs["charlm"])
    assert not explorer.temperature.visible and explorer.T == 1.0  # stored per-token statistics are at T=1
    assert "per token at T=1" in explorer.figures()["detail"].layout.title.text
    explorer.measure = "reverse_kl"
    assert explorer.values.shape == (64,)
    assert "reverse KL" in explorer.figures()["detail"].layout.title.text
    assert list(explorer.measure_menu.options.values()) == ["kl", "reverse_kl"]
    assert "token_map" not in explorer.figures()  # which tokens carry it is the Tokens page's


def test_token_explorer_on_a_language_model_run(demo_runs):
    from kdviz.errors import MissingDataError
    from kdviz.widgets import TokenExplorer

    explorer = TokenExplorer(demo_runs["charlm"])
    assert explorer.two_tokenizers is False and explorer.texts is None  # captured from ids, not from texts
    listed, values = explorer.listed(), explorer.values
    most = np.argsort(-values, kind="stable")[:40].tolist()  # the 40 most divergent, and the open text if not among them
    assert listed == (most if 0 in most else [0, *most])
    explorer.measure = "reverse_kl"
    token_map = explorer.figures()["token_map"]  # redrawn for the measure: its axis names it
    assert "reverse KL" in token_map.layout.yaxis.title.text and len(token_map.data[0].x) > 1000
    assert "reverse KL" in explorer.figures()["strip"].layout.title.text
    sample = int(token_map.data[0].customdata[7][1])
    explorer.panes["token_map"].click_data = {"points": [{"customdata": list(token_map.data[0].customdata[7])}]}
    assert explorer.selection.sample == sample  # a click on a token opens its text
    shares = explorer.regions.token_share
    assert f"{shares['confident, disagreeing']:.0%}" in explorer.shares.object and "this text: tokens" in explorer.shares.object
    with pytest.raises(MissingDataError, match="language-model runs"):
        TokenExplorer(demo_runs["digits-cnn"])


def test_temperature_lab_reacts_to_the_slider():
    lab = TemperatureLab()
    bars_before = np.asarray(lab.figures()["softmax"].data[0].y).copy()
    lab.T = 8.0
    bars_after = np.asarray(lab.figures()["softmax"].data[0].y)
    assert bars_after.max() < bars_before.max()  # hotter softmax is flatter
    z = parse_logits(lab.teacher_logits)
    np.testing.assert_allclose(bars_after, np.exp(lm.log_probs(z[None], 8.0).numpy()[0]))
    assert "8.00 ×" not in lab.loss_text.object and "64.00 ×" in lab.loss_text.object  # T² written out
    lab.teacher_logits = "not, numbers"
    assert "numbers separated by commas" in lab.message.object


def test_t_squared_keeps_gradients_comparable_across_temperatures():
    z_t, z_s = parse_logits("6, 3.5, 2, 1, 0"), parse_logits("4, 4, 0.5, 0.5, 0")
    norms = kd_gradient_norms(z_t, z_s, np.array([2.0, 20.0]))
    # without T² the soft-target gradient shrinks like 1/T² at high T; with T² it stays of the same order
    assert norms["without T²"][1] / norms["without T²"][0] < 0.05
    assert 0.5 < norms["with T²"][1] / norms["with T²"][0] < 2.0


def test_dkd_tab_shows_the_identity():
    lab = TemperatureLab()
    waterfall = lab.figures()["dkd"].data[0]
    tckd, weighted_nckd, total = waterfall.y
    assert tckd + weighted_nckd == pytest.approx(total, abs=1e-9)


def test_reverse_kl_fit_seeks_a_mode_and_forward_kl_covers_both():
    fig = modes_figure(4.0)
    x = np.asarray(fig.data[0].x)
    forward, reverse = np.asarray(fig.data[1].y), np.asarray(fig.data[2].y)

    def spread(p):
        mean = (x * p).sum()
        return np.sqrt(((x - mean) ** 2 * p).sum())

    assert spread(forward) > 1.5 > spread(reverse)  # the modes sit at ±2 with width 0.7


def test_presentation_mode_lists_samples_in_rows_that_fit_the_sidebar(demo_runs):
    """At 18 px the sidebar holds about 28 characters: a presented explorer lists a sample as index, divergence and
    label/teacher/student (said in the list's tooltip), the same facts as the full row."""
    run = demo_runs["digits-cnn"]
    presented = LogitExplorer(run, sample=406, present=True)
    z_t, z_s, y = run.teacher.logits[406], run.student.logits[406], run.labels[406]
    kl = lm.kl(run.teacher.logits[:], run.student.logits[:], 4.0)
    row = next(label for label, i in presented.samples.options.items() if i == 406)
    assert row == f"#406 kl {kl[406]:.4f} · {y}/{z_t.argmax()}/{z_s.argmax()}" and len(row) <= 28
    full = presented.logit_data.row_label(406, "kl", kl)  # as a notebook or the dashboard lists it
    assert f"label {y}, teacher {z_t.argmax()}, student {z_s.argmax()}" in full
    assert presented.samples.description.startswith("each row: sample, divergence · label/teacher/student answer")
