"""The shipped demo: committed weights, the three runs, retraining, and the `kdviz` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdviz.cli import main
from kdviz.demo import data as demo_data
from kdviz.demo.train import PAIRS, retrain, train_image_pair
from kdviz.demo.weights import assets_dir, load_pair


def test_demo_builds_three_runs_with_real_accuracies(demo_runs):
    assert sorted(demo_runs) == ["charlm", "digits-cnn", "digits-vit"]
    cnn, vit, lm = demo_runs["digits-cnn"], demo_runs["digits-vit"], demo_runs["charlm"]
    assert cnn.n_samples == vit.n_samples == demo_data.N_TEST_DIGITS
    # the committed weights are trained models, not random ones (random would be ~10%)
    assert cnn.teacher.description["accuracy"] > 0.97 and cnn.student.description["accuracy"] > 0.93
    assert vit.teacher.description["accuracy"] > 0.95 and vit.student.description["accuracy"] > 0.9
    assert lm.task == "tokens"
    assert lm.teacher.description["perplexity"] < lm.student.description["perplexity"] < 8
    assert cnn.class_names == [str(d) for d in range(10)]


def test_demo_accuracy_in_meta_is_what_the_models_score(demo_runs):
    teacher, _, _ = load_pair("cnn")
    digits = demo_data.load_digits()
    with torch.no_grad():
        accuracy = float((teacher(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert demo_runs["digits-cnn"].teacher.description["accuracy"] == pytest.approx(accuracy)


def test_demo_shapes(demo_runs):
    vit = demo_runs["digits-vit"]
    assert vit.teacher.heads == [4, 4, 4, 4] and vit.student.heads == [2, 2]
    assert vit.teacher.attention(0).shape == (500, 4, 17, 17)  # 2×2 patches of 8×8 digits + CLS
    assert vit.array("inputs/thumbnails").shape == (500, 8, 8)
    cnn = demo_runs["digits-cnn"]
    assert cnn.teacher.spatial("layer3").shape == (500, 4, 4)
    assert cnn.student.features("layer1").shape == (500, 8, 8, 8)
    lm = demo_runs["charlm"]
    assert lm.teacher.attention(3).shape == (64, 4, 64, 64)
    assert lm.teacher.logits.shape[0] == 8
    assert len(lm.tokens) == 64 and len(lm.tokens[0]) == 64


def test_committed_weights_are_small_safetensors():
    assets = assets_dir()
    files = sorted(assets.glob("*.safetensors"))
    assert len(files) == 6
    assert (assets / "charlm_teacher.safetensors").stat().st_size < 600_000  # clearly under 1 MB
    assert not list(assets.glob("*.pt")) and not list(assets.glob("*.pkl"))


def test_training_is_reproducible_from_the_seed():
    first = train_image_pair("cnn", PAIRS["cnn"], fast=True, progress=False)
    second = train_image_pair("cnn", PAIRS["cnn"], fast=True, progress=False)
    for a, b in zip(first, second, strict=True):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name


def test_retrain_writes_loadable_weights(tmp_path):
    manifest = retrain(tmp_path, fast=True, progress=False)
    assert set(manifest["pairs"]) == {"cnn", "vit", "charlm"}
    teacher, _, _ = load_pair("vit", tmp_path)
    out = teacher(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_info_command_prints_a_readable_summary(explained_demo_runs, capsys):
    run = explained_demo_runs["digits-cnn"]
    assert main(["info", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert "digits-cnn" in text and "classification, 500 samples, 10 classes" in text
    assert f"accuracy {100 * run.teacher.description['accuracy']:.1f}%" in text
    assert "S0→T0" in text
    assert "attrib.  explaining teacher_pred: grad_cam (500), integrated_gradients (500), saliency (500)" in text


def test_demo_runs_carry_attributions_of_both_models(explained_demo_runs):
    """`kdviz demo` explains every demo run, so the served dashboard never computes a gradient."""
    from kdviz.demo.build import DEMO_ATTRIBUTIONS

    for name, run in explained_demo_runs.items():
        assert run.attribution_targets() == {"teacher_pred": sorted(DEMO_ATTRIBUTIONS[name]["methods"])}
    lm = explained_demo_runs["charlm"].attribution("attention_x_gradient")
    assert lm.maps("teacher").shape == (explained_demo_runs["charlm"].n_samples, demo_data.SEQ_LEN)
    assert explained_demo_runs["digits-cnn"].attribution("grad_cam").attrs["layers"] == {"teacher": "layer3", "student": "layer3"}


def test_info_command_reports_errors_without_a_trace(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.kdviz")]) == 2
    assert "kdviz: error: no run at" in capsys.readouterr().err


def test_thumbnails_are_display_images(demo_runs):
    thumbs = demo_runs["digits-cnn"].array("inputs/thumbnails")[:10]
    assert thumbs.dtype == np.uint8 and thumbs.max() == 255 and thumbs.min() == 0
