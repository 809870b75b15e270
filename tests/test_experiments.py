"""The classic experiments in fast mode (one or two epochs): they run, return figures, and what must hold even
after so little training holds. The full runs (and their numbers) are in notebooks/teaching/, executed by the suite."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from kdviz.demo import experiments as ex


def test_omitted_class_soft_labels_teach_the_unseen_digit():
    out = ex.omitted_class(digit=3, fast=True)
    hard, soft = out["results"]
    assert hard["student"] == "hard labels" and soft["T"] == 20
    assert soft["auroc"] > hard["auroc"]  # soft labels rank the unseen «3»s higher, even after 2 epochs
    assert hard["raw_accuracy"] <= 0.05  # never told about «3», the hard-label student (almost) never answers it
    assert 0 < out["teacher_rate"] < 0.2 and isinstance(out["figures"]["omitted"], go.Figure)


def test_sweep_labels_only_is_the_same_at_every_temperature():
    out = ex.temperature_alpha_sweep(fast=True)
    accuracy = out["results"]["accuracy"]
    assert accuracy.shape == (2, 2) and out["results"]["alphas"] == [0.0, 1.0]
    assert accuracy[0, 1] == accuracy[1, 1]  # α = 1 has no teacher term, so T changes nothing (same seed, same batches)
    assert len(out["figures"]["sweep"].data) == 2


def test_teacher_assistant_reports_every_link():
    out = ex.teacher_assistant(fast=True)
    results = out["results"]
    sizes = results["parameters"]
    assert sizes["teacher"] > sizes["assistant"] > sizes["student (direct)"] == sizes["student (via assistant)"]
    assert [(link["from"], link["to"]) for link in results["links"]] == [
        ("teacher", "assistant"), ("teacher", "student (direct)"), ("assistant", "student (via assistant)")]
    assert all(np.isfinite(link["kl"]) and link["kl"] >= 0 for link in results["links"])
    assert results["accuracy"]["teacher"] > 0.99


def test_loss_comparison_records_every_method():
    out = ex.loss_comparison(fast=True)
    results = out["results"]
    assert list(results["methods"]) == ["KD", "DKD", "AT β=1000", "AT β=100", "Hint"]
    for method, curve in results["curves"].items():
        assert len(curve["steps"]) == 3, method  # step 0 and two epochs
        assert curve["kl"][-1] < curve["kl"][0], method  # every loss moves the student toward the teacher
        assert -0.1 < results["methods"][method]["cka_layer3"] <= 1.0
