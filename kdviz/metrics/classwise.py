"""Class-level summaries of a teacher/student pair: per-class means, agreement matrix, correctness quadrants,
and the class-mean-logit difference matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdviz.errors import InputError


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    y = _np(labels).astype(np.int64).reshape(-1)
    if len(y) != n:
        raise InputError(f"labels has {len(y)} entries but there are {n} samples")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"labels must be class indices in [0, {n_classes}); found {y.min()}..{y.max()}")
    return y


def per_class_mean(values: Any, labels: Any, n_classes: int) -> np.ndarray:
    """[C] mean of a per-sample value [N] over the samples of each true class; NaN for classes with no samples."""
    v = _np(values).astype(np.float64).reshape(-1)
    y = _labels(labels, len(v), n_classes)
    counts = np.bincount(y, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(y, weights=v, minlength=n_classes) / counts


def agreement_matrix(z_t: Any, z_s: Any) -> np.ndarray:
    """[C, C] counts: row = teacher's argmax class, column = student's argmax class (the diagonal is agreement)."""
    zt, zs = _np(z_t), _np(z_s)
    if zt.shape != zs.shape or zt.ndim != 2:
        raise InputError(f"agreement_matrix takes logits [N, C] of one shape, got {zt.shape} and {zs.shape}")
    n_classes = zt.shape[1]
    index = zt.argmax(1) * n_classes + zs.argmax(1)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


QUADRANTS = ("both right", "teacher right, student wrong", "teacher wrong, student right", "both wrong")


def correctness_masks(z_t: Any, z_s: Any, labels: Any) -> dict[str, np.ndarray]:
    """Boolean masks [N] of the samples in each teacher right/wrong × student right/wrong quadrant (keys: `QUADRANTS`)."""
    zt, zs = _np(z_t), _np(z_s)
    y = _labels(labels, len(zt), zt.shape[1])
    right_t, right_s = zt.argmax(1) == y, zs.argmax(1) == y
    masks = (right_t & right_s, right_t & ~right_s, ~right_t & right_s, ~right_t & ~right_s)
    return dict(zip(QUADRANTS, masks, strict=True))


def correctness_quadrants(z_t: Any, z_s: Any, labels: Any) -> dict[str, int]:
    """Counts of samples in each teacher right/wrong × student right/wrong quadrant (keys: `QUADRANTS`)."""
    return {name: int(mask.sum()) for name, mask in correctness_masks(z_t, z_s, labels).items()}


def class_mean_logit_difference(z_t: Any, z_s: Any, labels: Any) -> np.ndarray:
    """[C, C]: row c = mean teacher logit vector − mean student logit vector over samples of true class c (NaN rows
    for absent classes). Logits are shift-invariant per sample, so compare patterns within a row, not levels."""
    zt, zs = _np(z_t).astype(np.float64), _np(z_s).astype(np.float64)
    if zt.shape != zs.shape or zt.ndim != 2:
        raise InputError(f"class_mean_logit_difference takes logits [N, C] of one shape, got {zt.shape} and {zs.shape}")
    n_classes = zt.shape[1]
    y = _labels(labels, len(zt), n_classes)
    counts = np.bincount(y, minlength=n_classes)[:, None]
    sums = np.zeros((n_classes, n_classes))
    np.add.at(sums, y, zt - zs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts
