"""The logit widgets build and respond to programmatic control changes, as a notebook user's clicks would."""

from __future__ import annotations

import numpy as np
import pytest

from kdviz.metrics import logits as lm
from kdviz.widgets import LogitExplorer, TemperatureLab
from kdviz.widgets.temperature_lab import kd_gradient_norms, parse_logits


def test_logit_explorer_responds_to_temperature_and_filters(demo_runs):
    run = demo_runs["digits-cnn"]
    explorer = LogitExplorer(run, T=1.0)
    z_t, z_s = run.teacher.logits[:], run.student.logits[:]
    np.testing.assert_allclose(explorer.values, lm.kl(z_t, z_s, 1.0))
    before = np.asarray(explorer.figures["histogram"].data[0].x).copy()
    explorer.temperature.value = 8.0
    np.testing.assert_allclose(explorer.values, lm.kl(z_t, z_s, 8.0))
    assert not np.allclose(np.asarray(explorer.figures["histogram"].data[0].x), before)
    # the table lists the most divergent samples first, and a click drills into one
    first = explorer.table.options[0][1]
    assert first == int(np.argmax(explorer.values))
    explorer.table.value = explorer.table.options[3][1]
    assert explorer.selected == explorer.table.options[3][1]
    assert f"Sample {explorer.selected}" in explorer.figures["detail"].layout.title.text
    # the drilled-into sample stays selected when the temperature changes
    chosen = explorer.selected
    explorer.temperature.value = 6.0
    assert explorer.selected == chosen and f"Sample {chosen}" in explorer.figures["detail"].layout.title.text
    # filters
    explorer.class_filter.value = 3
    assert all(run.labels[i] == 3 for _, i in explorer.table.options)
    explorer.class_filter.value = -1
    explorer.correctness.value = "teacher right, student wrong"
    labels = run.labels[:]
    assert all(z_t[i].argmax() == labels[i] != z_s[i].argmax() for _, i in explorer.table.options)
    explorer.measure.value = "tv"
    np.testing.assert_allclose(explorer.values, lm.tv(z_t, z_s, 6.0))


def test_logit_explorer_on_a_language_model_run(demo_runs):
    explorer = LogitExplorer(demo_runs["charlm"])
    assert explorer.temperature.disabled  # stored per-token statistics are at T=1
    assert "per token" in explorer.figures["detail"].layout.title.text
    explorer.measure.value = "reverse_kl"
    assert explorer.values.shape == (64,)


def test_temperature_lab_reacts_to_the_slider():
    lab = TemperatureLab()
    bars_before = np.asarray(lab.figures["softmax"].data[0].y).copy()
    lab.temperature.value = 8.0
    bars_after = np.asarray(lab.figures["softmax"].data[0].y)
    assert bars_after.max() < bars_before.max()  # hotter softmax is flatter
    z = parse_logits(lab.teacher_text.value)
    np.testing.assert_allclose(bars_after, np.exp(lm.log_probs(z[None], 8.0).numpy()[0]))
    lab.teacher_text.value = "not, numbers"
    assert "numbers separated by commas" in lab.message.value


def test_t_squared_keeps_gradients_comparable_across_temperatures():
    z_t, z_s = parse_logits("6, 3.5, 2, 1, 0"), parse_logits("4, 4, 0.5, 0.5, 0")
    norms = kd_gradient_norms(z_t, z_s, np.array([2.0, 20.0]))
    # without T² the soft-target gradient shrinks like 1/T² at high T; with T² it stays of the same order
    assert norms["without T²"][1] / norms["without T²"][0] < 0.05
    assert 0.5 < norms["with T²"][1] / norms["with T²"][0] < 2.0


def test_dkd_tab_shows_the_identity():
    lab = TemperatureLab()
    waterfall = lab.figures["dkd"].data[0]
    tckd, weighted_nckd, total = waterfall.y
    assert tckd + weighted_nckd == pytest.approx(total, abs=1e-9)


def test_reverse_kl_fit_seeks_a_mode_and_forward_kl_covers_both():
    fig = TemperatureLab.modes_figure(4.0)
    x = np.asarray(fig.data[0].x)
    forward, reverse = np.asarray(fig.data[1].y), np.asarray(fig.data[2].y)

    def spread(p):
        mean = (x * p).sum()
        return np.sqrt(((x - mean) ** 2 * p).sum())

    assert spread(forward) > 1.5 > spread(reverse)  # the modes sit at ±2 with width 0.7
