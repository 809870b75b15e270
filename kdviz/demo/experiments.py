"""Classic distillation experiments, reproduced on scikit-learn's digits with the demo CNN teacher.

Each function trains real students with `kdviz.distill` (fixed seeds), measures them on the held-out digits and
returns ``{"results": ..., "figures": {...}}`` with the numbers it measured (never a paper's). ``fast=True`` trains
for one or two epochs, for the test suite; the full settings run in well under two minutes on 2 CPU cores.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from kdviz.demo.data import Digits, load_digits
from kdviz.demo.models import DigitsCNN
from kdviz.demo.weights import load_pair
from kdviz.losses import CE, DKD, KD, AttentionTransfer, DistillLoss, Hint
from kdviz.metrics import features as fm
from kdviz.metrics import logits as lm
from kdviz.readers.training import TrainingData
from kdviz.train import distill
from kdviz.views import experiments as views

SEED = 0
STUDENT = (8, 16, 16)  # 3.8k parameters, as the demo student
TINY = (4, 8, 8)
ASSISTANT = (16, 32, 32)


def _student(widths: Sequence[int], seed: int = SEED) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN(tuple(widths))


def _train(teacher: nn.Module, student: nn.Module, x: torch.Tensor, y: torch.Tensor, losses: list[DistillLoss], epochs: int,
           lr: float = 3e-3, **kwargs: Any) -> nn.Module:
    torch.manual_seed(SEED)  # the same batch order for every student of an experiment
    return distill(teacher, student, (x, y), losses=losses, epochs=epochs, lr=lr, batch_size=64, progress=False, device="cpu",
                   **kwargs)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return model.eval()(x).double().numpy()


def _scores(teacher_logits: np.ndarray, model: nn.Module, digits: Digits) -> dict[str, float]:
    z = _logits(model, digits.x_test)
    y = digits.y_test.numpy()
    return {"accuracy": lm.accuracy(z, y), "agreement": float(np.mean(z.argmax(1) == teacher_logits.argmax(1))),
            "kl": lm.dataset_mean(lm.kl(teacher_logits, z, 1.0))}


def omitted_class(digit: int = 3, temperatures: Sequence[float] = (1, 2, 4, 8, 20), *, epochs: int = 20, fast: bool = False
                  ) -> dict[str, Any]:
    """Dark knowledge (Hinton et al. 2015, §3): students trained on the digits with every ``digit`` removed.

    The hard-label student (cross-entropy on the remaining labels) is never told about ``digit``. The soft-label
    students see only the teacher's distributions at temperature T on the same images (KD with α = 0), where
    ``digit`` keeps some probability whenever an image resembles it. Per student, on the held-out digits:
    - ``raw_accuracy`` on the unseen digit: its logit's bias was never raised, so this stays near 0 for everyone;
    - ``auroc``: how well the student's margin for ``digit`` ranks the unseen digit's images above all others
      (bias-free: does the student know what the digit looks like?);
    - ``corrected_accuracy``: accuracy after shifting that one logit so the student predicts ``digit`` on the
      unlabeled held-out images as often as the teacher does (Hinton et al. raised the bias by hand; this uses no
      labels), with ``other_accuracy`` on the remaining digits after the shift.
    """
    digits, teacher = load_digits(), load_pair("cnn")[0]
    keep = digits.y_train != digit
    x, y = digits.x_train[keep], digits.y_train[keep]
    epochs = 2 if fast else epochs
    temperatures = tuple(temperatures)[-1:] if fast else tuple(temperatures)
    test_y = digits.y_test.numpy()
    teacher_rate = float(np.mean(_logits(teacher, digits.x_test).argmax(1) == digit))

    def measure(model: nn.Module, label: str, T: float | None) -> dict[str, Any]:
        z = _logits(model, digits.x_test)
        margin = z[:, digit] - np.delete(z, digit, axis=1).max(1)
        shift = -float(np.quantile(margin, 1 - teacher_rate))  # predict the digit as often as the teacher does
        corrected = np.where(margin + shift > 0, digit, np.delete(np.arange(z.shape[1]), digit)[np.delete(z, digit, 1).argmax(1)])
        unseen = test_y == digit
        return {"student": label, "T": T, "raw_accuracy": float(np.mean(z.argmax(1)[unseen] == digit)),
                "auroc": float(roc_auc_score(unseen, margin)), "bias_shift": shift,
                "corrected_accuracy": float(np.mean(corrected[unseen] == digit)),
                "other_accuracy": float(np.mean(corrected[~unseen] == test_y[~unseen])), "n_omitted": int(unseen.sum())}

    results = [measure(_train(teacher, _student(STUDENT), x, y, [CE()], epochs), "hard labels", None)]
    for T in temperatures:
        results.append(measure(_train(teacher, _student(STUDENT), x, y, [KD(T=T, alpha=0.0)], epochs), f"soft labels, T={T:g}", T))
    return {"results": results, "digit": digit, "epochs": epochs, "teacher_rate": teacher_rate,
            "figures": {"omitted": views.omitted_class_figure(results, digit, epochs)}}


def temperature_alpha_sweep(temperatures: Sequence[float] = (1, 2, 4, 8), alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                            n_train: int = 100, epochs: int = 150, fast: bool = False) -> dict[str, Any]:
    """Student accuracy and top-1 agreement with the teacher over T × α of Hinton's KD loss
    α·CE + (1 − α)·T²·KL, for a 3.8k-parameter student on ``n_train`` labelled digits (scarce labels, where the
    teacher's soft labels matter), trained to convergence (150 epochs = 300 steps; at 30 epochs the soft-label
    students were still far behind). α = 1 is training on labels alone, the same at every T."""
    digits, teacher = load_digits(), load_pair("cnn")[0]
    x, y = digits.x_train[:n_train], digits.y_train[:n_train]
    if fast:  # the two ends of α (teacher only, labels only) at the first two temperatures
        temperatures, alphas = tuple(temperatures)[:2], (alphas[0], alphas[-1])
    epochs = 1 if fast else epochs
    z_t = _logits(teacher, digits.x_test)
    accuracy = np.zeros((len(temperatures), len(alphas)))
    agreement = np.zeros_like(accuracy)
    for (i, T), (j, alpha) in itertools.product(enumerate(temperatures), enumerate(alphas)):
        scores = _scores(z_t, _train(teacher, _student(STUDENT), x, y, [KD(T=T, alpha=alpha)], epochs), digits)
        accuracy[i, j], agreement[i, j] = scores["accuracy"], scores["agreement"]
    results = {"temperatures": list(temperatures), "alphas": list(alphas), "accuracy": accuracy, "agreement": agreement,
               "n_train": n_train, "epochs": epochs}
    return {"results": results, "figures": {"sweep": views.sweep_figure(results)}}


def teacher_assistant(*, epochs: int = 20, fast: bool = False) -> dict[str, Any]:
    """Capacity gap (Mirzadeh et al. 2020): a 56.7k-parameter teacher, a 14.5k assistant distilled from it, and a
    1.1k student distilled either straight from the teacher or from the assistant. Reported per model: accuracy, and
    for each teacher → student link, the student's KL from its own teacher and agreement with it."""
    digits, teacher = load_digits(), load_pair("cnn")[0]
    epochs = 2 if fast else epochs
    loss = [KD(T=4, alpha=0.5)]
    assistant = _train(teacher, _student(ASSISTANT), digits.x_train, digits.y_train, loss, epochs)
    direct = _train(teacher, _student(TINY), digits.x_train, digits.y_train, loss, epochs)
    via = _train(assistant, _student(TINY), digits.x_train, digits.y_train, loss, epochs)
    z = {"teacher": _logits(teacher, digits.x_test), "assistant": _logits(assistant, digits.x_test)}
    models = {"teacher": teacher, "assistant": assistant, "student (direct)": direct, "student (via assistant)": via}
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    links = [("teacher", "assistant", assistant), ("teacher", "student (direct)", direct), ("assistant", "student (via assistant)", via)]
    results = {
        "accuracy": {name: lm.accuracy(_logits(m, digits.x_test), digits.y_test.numpy()) for name, m in models.items()},
        "parameters": sizes,
        "links": [{"from": source, "to": target, **_scores(z[source], model, digits)} for source, target, model in links],
        "epochs": epochs,
    }
    return {"results": results, "figures": {"chain": views.assistant_figure(results)}}


def loss_comparison(*, epochs: int = 15, fast: bool = False) -> dict[str, Any]:
    """KD vs DKD vs attention transfer vs FitNets hints for the demo's 3.8k-parameter student, each recorded on the
    held-out digits at every epoch: final accuracy, agreement and debiased CKA of the last feature stage, and the
    curves of KL to the teacher. AT and Hint add their feature term to cross-entropy, as in their papers. AT runs
    twice: with the authors' β = 1000, which for this small student outweighs the label term, and with β = 100."""
    digits, teacher = load_digits(), load_pair("cnn")[0]
    epochs = 2 if fast else epochs
    pairs = [("layer2", "layer2"), ("layer3", "layer3")]
    setups: dict[str, list[DistillLoss]] = {
        "KD": [KD(T=4, alpha=0.5)],
        "DKD": [CE(), DKD(alpha=1.0, beta=8.0, T=4)],
        "AT β=1000": [CE(), AttentionTransfer(pairs, beta=1000.0)],  # the authors' β, tuned for wide ResNets on CIFAR
        "AT β=100": [CE(), AttentionTransfer(pairs, beta=100.0)],
        "Hint": [CE(), Hint([("layer2", "layer2")], weight=0.5)],
    }
    z_t = _logits(teacher, digits.x_test)
    results: dict[str, Any] = {"methods": {}, "curves": {}, "epochs": epochs}
    for name, losses in setups.items():
        with tempfile.TemporaryDirectory() as tmp:
            student = _train(teacher, _student(STUDENT), digits.x_train, digits.y_train, losses, epochs,
                             record=f"{tmp}/{name}.kdviz", probe=(digits.x_test, digits.y_test), record_layers=["layer3"])
            history = TrainingData.from_run(f"{tmp}/{name}.kdviz")
            scores = _scores(z_t, student, digits)
            run = history.run
            scores["cka_layer3"] = fm.cka(_pooled(run.teacher.features("layer3")[:]), _pooled(run.student.features("layer3")[:]))
        results["methods"][name] = scores
        results["curves"][name] = {"steps": history.steps, "kl": history.series["kl"], "accuracy": history.series["accuracy"]}
    return {"results": results, "figures": {"comparison": views.loss_comparison_figure(results)}}


def _pooled(features: np.ndarray) -> np.ndarray:
    return fm.pool_features(features).double().numpy()
