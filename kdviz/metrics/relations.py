"""Other ways to compare two representations of the same samples: Procrustes distance, mutual nearest neighbours,
RKD's relational distance and angle terms, and the FitNets projector made explicit (ridge regression, held-out R²).

All take features x [n, d] and y [n, e] (extra axes flattened), compute in float64 and raise `InputError` on bad input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdviz.errors import InputError


def _pair(x: Any, y: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if len(a) != len(b):
        raise InputError(f"both representations must describe the same samples: {len(a)} vs {len(b)} rows")
    if len(a) < min_n:
        raise InputError(f"need at least {min_n} samples, got {len(a)}")
    for name, m in (("x", a), ("y", b)):
        bad = ~np.isfinite(m).all(axis=1)
        if bad.any():
            raise InputError(f"{name} contains NaN or inf at sample index {np.flatnonzero(bad)[:5].tolist()}")
    return a, b


def procrustes_distance(x: Any, y: Any) -> float:
    """Orthogonal Procrustes distance min_Q ‖X − Y Q‖²_F after centring and scaling both to unit Frobenius norm.

    Equals 2 − 2‖Xᵀ Y‖_* (nuclear norm), so different widths are fine (as if the narrower one were zero-padded).
    0 means equal up to rotation, reflection, translation and scale; the maximum is 2.
    """
    a, b = _pair(x, y)
    a, b = a - a.mean(0), b - b.mean(0)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise InputError("a representation is constant over these samples; the Procrustes distance is undefined")
    nuclear = np.linalg.svd((a / na).T @ (b / nb), compute_uv=False).sum()
    return float(max(0.0, 2.0 - 2.0 * nuclear))


def _knn(features: np.ndarray, k: int) -> np.ndarray:
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-300)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def mutual_knn(x: Any, y: Any, k: int = 10) -> float:
    """Mean over samples of |kNN_x(i) ∩ kNN_y(i)| / k, with cosine neighbours of L2-normalised features (self excluded)."""
    a, b = _pair(x, y, min_n=k + 1)
    nx, ny = _knn(a, k), _knn(b, k)
    overlap = [len(np.intersect1d(nx[i], ny[i], assume_unique=True)) for i in range(len(a))]
    return float(np.mean(overlap) / k)


def _huber(values: np.ndarray) -> float:
    absolute = np.abs(values)
    return float(np.mean(np.where(absolute < 1, 0.5 * values**2, absolute - 0.5)))


def rkd_distance(x: Any, y: Any) -> float:
    """RKD distance term (Park et al. 2019): Huber loss between the pairwise-distance matrices, each divided by its mean.

    0 when the two representations relate samples alike up to scale.
    """
    a, b = _pair(x, y)
    upper = np.triu_indices(len(a), k=1)

    def normalised_distances(m: np.ndarray) -> np.ndarray:
        sq = (m * m).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * m @ m.T, 0))[upper]
        mean = d.mean()
        if mean == 0:
            raise InputError("all samples coincide in one representation; RKD distances are undefined")
        return d / mean

    return _huber(normalised_distances(a) - normalised_distances(b))


def rkd_angle(x: Any, y: Any, max_samples: int = 64) -> float:
    """RKD angle term: Huber loss between cos∠(e_i − e_j, e_k − e_j) over all triplets (the first ``max_samples``)."""
    a, b = _pair(x, y, min_n=3)
    a, b = a[:max_samples], b[:max_samples]

    def cosines(m: np.ndarray) -> np.ndarray:
        diff = m[:, None, :] - m[None, :, :]  # [i, j, d] = e_i − e_j
        unit = diff / np.maximum(np.linalg.norm(diff, axis=2, keepdims=True), 1e-300)
        return np.einsum("ijd,kjd->ijk", unit, unit)  # cos of the angle at j between i and k

    return _huber(cosines(a) - cosines(b))


def projector_fit(student: Any, teacher: Any, *, alpha: float = 1.0, folds: int = 5, seed: int = 0) -> float:
    """Held-out R² of a ridge regression from student features [n, d_s] to teacher features [n, d_t] (FitNets' regressor).

    k-fold cross-validation; inputs and targets are centred on each training fold; R² = 1 − SSE / SST summed over all
    teacher dimensions (variance-weighted). Uses the dual form when d_s > n. 1 means the teacher layer is a linear
    function of the student layer; ≤ 0 means no better than predicting the mean.
    """
    x, y = _pair(student, teacher, min_n=max(4, folds))
    if alpha <= 0:
        raise InputError(f"ridge alpha must be positive, got {alpha}")
    order = np.random.default_rng(seed).permutation(len(x))
    sse = sst = 0.0
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(order, held_out, assume_unique=True)
        x_mean, y_mean = x[train].mean(0), y[train].mean(0)
        xt, yt = x[train] - x_mean, y[train] - y_mean
        if xt.shape[1] <= xt.shape[0]:
            weights = np.linalg.solve(xt.T @ xt + alpha * np.eye(xt.shape[1]), xt.T @ yt)
        else:
            weights = xt.T @ np.linalg.solve(xt @ xt.T + alpha * np.eye(xt.shape[0]), yt)
        prediction = (x[held_out] - x_mean) @ weights + y_mean
        sse += float(((y[held_out] - prediction) ** 2).sum())
        sst += float(((y[held_out] - y_mean) ** 2).sum())
    if sst == 0:
        raise InputError("the teacher features are constant; R² is undefined")
    return 1.0 - sse / sst
