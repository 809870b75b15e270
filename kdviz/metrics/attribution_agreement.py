"""Does the student look where the teacher looks? Per-sample agreement of two attribution maps, and the
"same answer, same reason" table that sets it beside prediction agreement.

Maps [N, ...] (one per sample and model) are compared position by position over the valid positions (``mask``
[N, ...] for padded text). Every measure is scale-free, because each model's attributions live on the scale of
its own logits. A value is NaN where it is undefined (a constant map has no ranks, an all-zero map no direction),
never replaced by a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from kdviz.errors import InputError

AGREEMENT_METRICS: dict[str, str] = {
    "spearman": "Spearman rank correlation",
    "cosine": "cosine similarity",
    "topk_iou": "top-10% overlap (IoU)",
}
QUADRANTS = ("same answer, same reason", "same answer, different reason", "different answer, same reason",
             "different answer, different reason")
DEFAULT_THRESHOLD = 0.5


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _pair(a: Any, b: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened float64 maps [N, P] and a validity mask [N, P]; NaN, inf and shape mismatches raise."""
    x, y = _np(a).astype(np.float64), _np(b).astype(np.float64)
    if x.shape != y.shape or x.ndim < 2:
        raise InputError(
            f"attribution maps must share one shape [N, ...], got {x.shape} and {y.shape}; resize them to a common grid first"
        )
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    valid = np.ones(x.shape, bool) if mask is None else _np(mask).astype(bool).reshape(len(x), -1)
    if valid.shape != x.shape:
        raise InputError(f"mask has shape {_np(mask).shape} but the maps have {a.shape if hasattr(a, 'shape') else x.shape}")
    for name, m in (("teacher", x), ("student", y)):
        bad = ~np.isfinite(m) & valid
        if bad.any():
            raise InputError(f"the {name} attribution maps contain NaN or inf (sample {int(np.flatnonzero(bad.any(1))[0])}); "
                             "check the model's outputs and the attribution baseline")
    return x, y, valid


def _rowwise(x: np.ndarray, y: np.ndarray, valid: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn(x [n, P], y [n, P]) -> [n]`` to rows grouped by their set of valid positions (one group per length)."""
    if valid.all():
        return fn(x, y)
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        keep = valid[i]
        if keep.any():
            out[i] = fn(x[i : i + 1, keep], y[i : i + 1, keep])[0]
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    denominator = np.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (xc * yc).sum(1) / denominator, np.nan)


def spearman(a: Any, b: Any, mask: Any | None = None) -> np.ndarray:
    """[N] Spearman rank correlation of each pair of maps: Pearson correlation of their ranks (ties get their mean
    rank). In [-1, 1]; NaN when a map is constant."""
    x, y, valid = _pair(a, b, mask)
    return _rowwise(x, y, valid, lambda p, q: _pearson(rankdata(p, axis=1), rankdata(q, axis=1)))


def _cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    denominator = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(1) / denominator, np.nan)


def cosine(a: Any, b: Any, mask: Any | None = None) -> np.ndarray:
    """[N] cosine similarity ⟨a, b⟩ / (‖a‖ ‖b‖) of each pair of maps (signs kept). NaN when a map is all zero."""
    x, y, valid = _pair(a, b, mask)
    return _rowwise(x, y, valid, _cosine)


def top_set(values: np.ndarray, fraction: float) -> np.ndarray:
    """[n, P] bool: the top ``fraction`` of positions of each row by |value| (k = ⌈fraction·P⌉). Ties at the k-th value
    are all included, so the set never depends on position order; zeros are never "important"."""
    magnitude = np.abs(values)
    k = max(1, math.ceil(fraction * values.shape[1]))
    kth = -np.partition(-magnitude, k - 1, axis=1)[:, k - 1 : k]
    return (magnitude >= kth) & (magnitude > 0)


def topk_iou(a: Any, b: Any, mask: Any | None = None, fraction: float = 0.1) -> np.ndarray:
    """[N] intersection over union of the two maps' top-``fraction`` positions by |value| (`top_set`). In [0, 1];
    NaN when both maps are all zero. Two random maps score about fraction / (2 − fraction)."""
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    x, y, valid = _pair(a, b, mask)

    def iou(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        sp, sq = top_set(p, fraction), top_set(q, fraction)
        union = (sp | sq).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, (sp & sq).sum(1) / union, np.nan)

    return _rowwise(x, y, valid, iou)


def agreement(a: Any, b: Any, mask: Any | None = None, metrics: Sequence[str] = tuple(AGREEMENT_METRICS)) -> dict[str, np.ndarray]:
    """Every requested agreement measure between teacher maps ``a`` and student maps ``b`` [N, ...]: {metric: [N]}."""
    functions = {"spearman": spearman, "cosine": cosine, "topk_iou": topk_iou}
    unknown = [m for m in metrics if m not in functions]
    if unknown:
        raise InputError(f"unknown agreement metric(s) {unknown}; choose from {list(AGREEMENT_METRICS)}")
    return {m: functions[m](a, b, mask) for m in metrics}


def per_class_summary(values: Any, classes: Any, n_classes: int) -> dict[str, np.ndarray]:
    """Per class c: ``mean`` [C], ``sem`` [C] (standard error) and ``count`` [C] of the defined (non-NaN) values [N]
    of the samples explained for class c; mean and sem are NaN for classes with no defined value."""
    v = _np(values).astype(np.float64).reshape(-1)
    c = _np(classes).astype(np.int64).reshape(-1)
    if len(c) != len(v):
        raise InputError(f"classes has {len(c)} entries but there are {len(v)} values")
    if len(c) and (c.min() < 0 or c.max() >= n_classes):
        raise InputError(f"classes must be in [0, {n_classes}); found {c.min()}..{c.max()}")
    defined = np.isfinite(v)
    count = np.bincount(c[defined], minlength=n_classes)
    total = np.bincount(c[defined], weights=v[defined], minlength=n_classes)
    squares = np.bincount(c[defined], weights=v[defined] ** 2, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        variance = np.maximum(squares / count - mean**2, 0) * count / (count - 1)
        sem = np.sqrt(variance / count)
    return {"mean": mean, "sem": np.where(count > 1, sem, np.nan), "count": count}


def answer_margin(z_s: Any, classes: Any) -> np.ndarray:
    """[N] how firmly the student gives the explained class: log p_s(c) − max_{c' ≠ c} log p_s(c') (= the logit gap).
    Positive exactly when the student's top class is c; for c = the teacher's prediction, when the two agree."""
    z = _np(z_s).astype(np.float64)
    c = _np(classes).astype(np.int64).reshape(-1)
    if z.ndim != 2 or len(z) != len(c):
        raise InputError(f"answer_margin takes student logits [N, C] and classes [N], got {z.shape} and {c.shape}")
    rows = np.arange(len(z))
    chosen = z[rows, c]
    others = z.copy()
    others[rows, c] = -np.inf
    return chosen - others.max(1)


def fidelity_table(z_t: Any, z_s: Any, agreement_values: Any, *, labels: Any | None = None,
                   threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Per sample: does the student agree with the teacher on the answer, and on the reason?

    Logits [N, C] of the explained samples and their attribution agreement [N]. Columns (each [N]):
    ``teacher_pred``, ``student_pred``, ``same_answer``, ``same_reason`` (agreement ≥ ``threshold``; False where
    the agreement is undefined), ``agreement``, ``margin`` (`answer_margin` for the teacher's class), ``quadrant``
    (index into `QUADRANTS`), and with labels ``label``, ``teacher_correct``, ``student_correct``.
    """
    zt, zs = _np(z_t).astype(np.float64), _np(z_s).astype(np.float64)
    values = _np(agreement_values).astype(np.float64).reshape(-1)
    if zt.shape != zs.shape or zt.ndim != 2 or len(zt) != len(values):
        raise InputError(f"fidelity_table takes logits [N, C] of one shape and agreement [N]; got {zt.shape}, {zs.shape}, {values.shape}")
    teacher_pred, student_pred = zt.argmax(1), zs.argmax(1)
    same_answer = teacher_pred == student_pred
    with np.errstate(invalid="ignore"):
        same_reason = values >= threshold
    table = {
        "teacher_pred": teacher_pred, "student_pred": student_pred, "same_answer": same_answer, "same_reason": same_reason,
        "agreement": values, "margin": answer_margin(zs, teacher_pred),
        "quadrant": np.where(same_answer, 0, 2) + np.where(same_reason, 0, 1),
    }
    if labels is not None:
        y = _np(labels).astype(np.int64).reshape(-1)
        if len(y) != len(values):
            raise InputError(f"labels has {len(y)} entries but there are {len(values)} samples")
        table.update(label=y, teacher_correct=teacher_pred == y, student_correct=student_pred == y)
    return table


def quadrant_counts(table: dict[str, np.ndarray]) -> dict[str, dict[str, float | int | None]]:
    """Per quadrant of a `fidelity_table`: the number of samples and, with labels, the student's accuracy there."""
    out: dict[str, dict[str, float | int | None]] = {}
    for index, name in enumerate(QUADRANTS):
        members = table["quadrant"] == index
        correct = table.get("student_correct")
        accuracy = float(correct[members].mean()) if correct is not None and members.any() else None
        out[name] = {"count": int(members.sum()), "student_accuracy": accuracy}
    return out
