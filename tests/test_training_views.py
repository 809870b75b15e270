"""Views over training time and the step slider, on runs recorded by `kdviz.distill`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

import kdviz
from kdviz.demo.data import load_digits
from kdviz.demo.models import DigitsCNN, DigitsViT
from kdviz.demo.weights import load_pair
from kdviz.errors import InputError, MissingDataError
from kdviz.losses import KD
from kdviz.metrics import logits as lm
from kdviz.readers.training import TrainingData
from kdviz.views import theme
from kdviz.views import training as views
from kdviz.widgets import AlignmentExplorer, AttentionExplorer, LogitExplorer, TrainingExplorer


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    digits = load_digits()
    teacher, _, _ = load_pair("cnn")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tv") / "cnn.kdviz"
    kdviz.distill(teacher, DigitsCNN((8, 16, 16)), (digits.x_train[:640], digits.y_train[:640]), epochs=3, record=path,
                  probe=(digits.x_test[:150], digits.y_test[:150]), record_layers=["layer2", "layer3"], lr=3e-3, progress=False)
    return kdviz.Run.open(path)


def reference_series(run):
    """KL(p_t‖p_s), CE and agreement per step in plain float64 numpy."""
    y = run.labels[:]
    out = {"kl": [], "ce": [], "agreement": []}
    for step in run.steps:
        z_t, z_s = run.teacher.logits[:].astype(np.float64), run.at_step(step).student.logits[:].astype(np.float64)
        lt, ls = log_softmax(z_t, 1), log_softmax(z_s, 1)
        out["kl"].append(np.mean(np.sum(np.exp(lt) * (lt - ls), 1)))
        out["ce"].append(np.mean(-ls[np.arange(len(y)), y]))
        out["agreement"].append(np.mean(z_t.argmax(1) == z_s.argmax(1)))
    return out


def test_training_series_are_the_metrics_at_each_step(cnn_run):
    data = TrainingData.from_run(cnn_run)
    assert data.steps.tolist() == cnn_run.steps == [0, 10, 20, 30]
    for name, values in reference_series(cnn_run).items():
        np.testing.assert_allclose(data.series[name], values, rtol=1e-6, err_msg=name)
    assert set(data.losses) == {"kd/kd", "kd/ce", "total"} and np.isnan(data.losses["total"][0])  # no loss before step 1
    assert list(data.cka) == ["layer2 ↔ layer2", "layer3 ↔ layer3"]
    assert data.series["teacher_ece"].std() == 0  # the teacher does not change


def test_curves_and_the_teacher_hacking_plot_draw_those_series(cnn_run):
    data = TrainingData.from_run(cnn_run)
    fig = views.training_curves(data, selected_step=10)
    by_name = {trace.name: trace for trace in fig.data}
    np.testing.assert_allclose(np.asarray(by_name["KL(teacher ‖ student), T = 1"].y), data.series["kl"])
    assert {"loss kd/kd", "loss total", "CKA layer3 ↔ layer3", "teacher ECE"} <= set(by_name)
    hacking = views.teacher_hacking_view(data)
    np.testing.assert_allclose(np.asarray(hacking.data[0].x), data.series["kl"])
    np.testing.assert_allclose(np.asarray(hacking.data[0].y), data.series["ce"])
    assert hacking.layout.xaxis.type == "log" and hacking.layout.yaxis.type == "log"


def test_a_run_without_history_says_how_to_record_one(tmp_path):
    digits = load_digits()
    teacher, student, _ = load_pair("cnn")
    run = kdviz.capture(teacher, student, (digits.x_test[:20], digits.y_test[:20]), path=tmp_path / "c.kdviz", progress=False)
    with pytest.raises(MissingDataError, match=r"kdviz\.distill"):
        TrainingData.from_run(run)
    assert LogitExplorer(run).selection.step is None
    with pytest.raises(InputError, match="was not recorded"):
        LogitExplorer(run, step=3)


def test_the_step_menu_shows_the_run_at_that_step(cnn_run):
    explorer = LogitExplorer(cnn_run, T=2.0)
    step_menu = explorer._selection_controls()[0][0]
    assert list(step_menu.options.values()) == cnn_run.steps and explorer.selection.step == cnn_run.steps[-1]
    step_menu.value = 10
    expected = lm.kl(cnn_run.teacher.logits[:], cnn_run.at_step(10).student.logits[:], T=2.0)
    np.testing.assert_allclose(explorer.values, expected)
    alignment = AlignmentExplorer(cnn_run, step=0)
    early = alignment.result["cross"].copy()
    alignment.selection.step = 30
    assert not np.allclose(early, alignment.result["cross"])
    training = TrainingExplorer(cnn_run, step=30)
    assert set(training.figures()) >= {"curves"}
    training.panes["curves"].click_data = {"points": [{"x": 9.4, "curveNumber": 0}]}  # a point of the curves: its step
    assert training.selection.step == 10


def test_attention_explorer_scrubs_a_vit_students_attention(tmp_path):
    digits = load_digits()
    teacher, _, _ = load_pair("vit")
    torch.manual_seed(0)
    run_path = tmp_path / "vit.kdviz"
    kdviz.distill(teacher, DigitsViT(dim=32, depth=2, num_heads=2), (digits.x_train[:256], digits.y_train[:256]), epochs=2,
                  record=run_path, probe=(digits.x_test[:16], digits.y_test[:16]), progress=False, losses=[KD(alpha=0.5)])
    run = kdviz.Run.open(run_path)
    assert not np.allclose(run.at_step(0).student.attention(0)[:], run.at_step(run.steps[-1]).student.attention(0)[:])
    explorer = AttentionExplorer(run)
    explorer.selection.step = 0
    assert explorer.attention.run.step == 0 and "pair" in explorer.figures()


def test_each_panel_has_its_own_legend_and_pair_measures_wear_ink(cnn_run):
    """Loss terms and CKA layers are measures of the pair: ink (CKA darker with depth), never the class palette; each
    panel's traces are listed in a legend inside that panel, not in one list beside all five."""
    fig = views.training_curves(TrainingData.from_run(cnn_run))
    pair_lines = [t for t in fig.data if t.name.startswith(("loss", "CKA", "KL", "top-1"))]
    assert pair_lines and not {t.line.color for t in pair_lines} & set(theme.CATEGORICAL)
    cka = [t.line.color for t in fig.data if t.name.startswith("CKA")]
    assert cka == theme.ink_ramp(len(cka))
    for trace in fig.data:
        legend = fig.layout[trace.legend or "legend"]
        x_domain, y_domain = fig.layout[trace.xaxis.replace("x", "xaxis")].domain, fig.layout[trace.yaxis.replace("y", "yaxis")].domain
        assert x_domain[0] <= legend.x <= x_domain[1] and y_domain[0] <= legend.y <= y_domain[1], trace.name
