"""Representation similarity between teacher and student layers: CKA (biased and debiased), streaming minibatch CKA
over every layer pair, and the monotone layer-map suggestion.

Conventions (KD-NOTES.md): features [n, d] are mean-centred in float64 before any Gram product (exact for HSIC, and it
keeps float32 features with a large offset from overflowing); sums are accumulated in float64. The debiased estimator
uses U-centred Grams (unbiased HSIC, Song et al. 2012) and needs n ≥ 4; it can be slightly negative, and is returned
as it is, never clamped. Biased linear CKA is inflated when the width is much larger than n.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError

F64 = torch.float64


def _features(x: Any, what: str) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if tensor.ndim < 2:
        raise InputError(f"{what} must be [n, d] (or [n, ...], flattened per sample), got shape {tuple(tensor.shape)}")
    tensor = tensor.reshape(tensor.shape[0], -1)
    if not tensor.is_floating_point():
        tensor = tensor.double()
    if not bool(torch.isfinite(tensor).all()):
        rows = torch.nonzero(~torch.isfinite(tensor).all(dim=1)).flatten()[:5].tolist()
        raise InputError(f"{what} contain NaN or inf at sample index {rows}")
    return tensor


def centred(x: torch.Tensor) -> torch.Tensor:
    """Subtract the per-column mean (computed in float64), keeping the input's precision for the Gram product."""
    mean = x.mean(dim=0, keepdim=True, dtype=F64)
    return (x.to(F64) - mean).to(x.dtype)


def linear_gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix X_c X_cᵀ [n, n] of column-centred features, returned in float64."""
    xc = centred(x)
    return (xc @ xc.T).to(F64)


def rbf_gram(x: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """RBF kernel exp(−‖xi − xj‖² / (2σ²)) [n, n]; σ defaults to the median pairwise distance."""
    xc = centred(x).to(F64)
    sq = (xc * xc).sum(1)
    dist2 = (sq[:, None] + sq[None, :] - 2 * xc @ xc.T).clamp_min(0)
    if bandwidth is None:
        off_diagonal = dist2[~torch.eye(len(dist2), dtype=torch.bool)]
        median = float(off_diagonal.sqrt().median()) if off_diagonal.numel() else 1.0
        bandwidth = median if median > 0 else 1.0
    return torch.exp(-dist2 / (2 * bandwidth**2))


def centre_gram(gram: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/n (double centring), for the biased HSIC."""
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def u_centre_gram(gram: torch.Tensor) -> torch.Tensor:
    """U-centring (Székely & Rizzo): ⟨U(K), U(L)⟩ / (n(n−3)) is the unbiased HSIC. Needs n ≥ 4.

    Steps (KD-NOTES.md): zero the diagonal; m = column sums / (n−2); m −= Σm / (2(n−1)); K − m1ᵀ − 1mᵀ; zero the diagonal.
    """
    n = gram.shape[0]
    if n < 4:
        raise InputError(f"the unbiased HSIC needs at least 4 samples per batch, got {n}; use larger batches or unbiased=False")
    k = gram.clone()
    k.fill_diagonal_(0)
    means = k.sum(0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    k = k - means[:, None] - means[None, :]
    k.fill_diagonal_(0)
    return k


def hsic(gram_x: torch.Tensor, gram_y: torch.Tensor, unbiased: bool = True) -> float:
    """HSIC of two Gram matrices: unbiased ⟨U(K), U(L)⟩ / (n(n−3)), or biased ⟨HKH, HLH⟩ / (n−1)²."""
    n = gram_x.shape[0]
    if unbiased:
        return float((u_centre_gram(gram_x) * u_centre_gram(gram_y)).sum() / (n * (n - 3)))
    return float((centre_gram(gram_x) * centre_gram(gram_y)).sum() / (n - 1) ** 2)


def cka(x: Any, y: Any, *, unbiased: bool = True, kernel: str = "linear", bandwidth: float | None = None) -> float:
    """CKA between two representations of the same n samples, x [n, d] and y [n, e] (extra axes are flattened).

    CKA = HSIC(K, L) / √(HSIC(K, K)·HSIC(L, L)); ``unbiased`` uses the debiased HSIC (n ≥ 4) and may be slightly
    negative for unrelated features. ``kernel`` is ``"linear"`` or ``"rbf"`` (median-distance bandwidth by default).
    """
    fx, fy = _features(x, "x"), _features(y, "y")
    if fx.shape[0] != fy.shape[0]:
        raise InputError(f"x and y must describe the same samples: {fx.shape[0]} vs {fy.shape[0]} rows")
    if kernel == "linear":
        gx, gy = linear_gram(fx), linear_gram(fy)
    elif kernel == "rbf":
        gx, gy = rbf_gram(fx, bandwidth), rbf_gram(fy, bandwidth)
    else:
        raise InputError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    xy, xx, yy = hsic(gx, gy, unbiased), hsic(gx, gx, unbiased), hsic(gy, gy, unbiased)
    if xx <= 0 or yy <= 0:
        raise InputError("a representation is constant over these samples (zero self-similarity); CKA is undefined")
    return xy / float(np.sqrt(xx * yy))


class MinibatchCKA:
    """Streaming minibatch CKA (Nguyen et al. 2021) for every teacher layer × student layer pair at once.

    For each batch, every layer's Gram matrix is built and U-centred once (biased: double-centred); the matrices are
    flattened and stacked, and one matrix product gives the HSIC of every pair. The estimate is
    mean_b HSIC(K_b, L_b) / √(mean_b HSIC(K_b, K_b) · mean_b HSIC(L_b, L_b)). Memory is O(layers · n²), independent
    of feature width. Batches may differ in size (each HSIC uses its own n); with ``unbiased`` each needs n ≥ 4.
    ``within=True`` also accumulates teacher × teacher and student × student matrices.
    """

    def __init__(self, n_teacher: int, n_student: int, *, unbiased: bool = True, within: bool = True) -> None:
        if n_teacher < 1 or n_student < 1:
            raise InputError("MinibatchCKA needs at least one teacher layer and one student layer")
        self.n_teacher, self.n_student = n_teacher, n_student
        self.unbiased = unbiased
        self.within = within
        self.cross = torch.zeros(n_teacher, n_student, dtype=F64)
        self.teacher_self = torch.zeros(n_teacher, n_teacher, dtype=F64)
        self.student_self = torch.zeros(n_student, n_student, dtype=F64)
        self.n_batches = 0
        self.n_samples = 0

    def _stacked_grams(self, features: Sequence[Any], what: str) -> torch.Tensor:
        grams = []
        for i, feature in enumerate(features):
            gram = linear_gram(_features(feature, f"{what} layer {i} features"))
            grams.append((u_centre_gram(gram) if self.unbiased else centre_gram(gram)).reshape(-1))
        return torch.stack(grams)

    def update(self, teacher: Sequence[Any], student: Sequence[Any]) -> None:
        """Add one batch: a list of teacher features and a list of student features, each [n, ...] for the same n samples."""
        if len(teacher) != self.n_teacher or len(student) != self.n_student:
            raise InputError(
                f"expected {self.n_teacher} teacher and {self.n_student} student layers, got {len(teacher)} and {len(student)}"
            )
        sizes = {int(np.shape(f)[0]) for f in (*teacher, *student)}
        if len(sizes) != 1:
            raise InputError(f"every layer of a batch must hold the same samples; got batch sizes {sorted(sizes)}")
        n = sizes.pop()
        if self.unbiased and n < 4:
            raise InputError(f"a batch of {n} samples is too small for the unbiased HSIC (needs n ≥ 4); drop it or use unbiased=False")
        scale = n * (n - 3) if self.unbiased else (n - 1) ** 2
        g_t, g_s = self._stacked_grams(teacher, "teacher"), self._stacked_grams(student, "student")
        self.cross += g_t @ g_s.T / scale
        if self.within:
            self.teacher_self += g_t @ g_t.T / scale
            self.student_self += g_s @ g_s.T / scale
        else:
            self.teacher_self.diagonal().add_((g_t * g_t).sum(1) / scale)
            self.student_self.diagonal().add_((g_s * g_s).sum(1) / scale)
        self.n_batches += 1
        self.n_samples += n

    def all_reduce(self) -> None:
        """Sum the accumulators across torch.distributed ranks (each rank fed its own batches)."""
        import torch.distributed as dist

        for tensor in (self.cross, self.teacher_self, self.student_self):
            dist.all_reduce(tensor)
        counts = torch.tensor([self.n_batches, self.n_samples], dtype=F64)
        dist.all_reduce(counts)
        self.n_batches, self.n_samples = int(counts[0]), int(counts[1])

    @staticmethod
    def _normalise(cross: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> np.ndarray:
        if bool((left <= 0).any()) or bool((right <= 0).any()):
            raise InputError("a layer is constant over the data (zero self-similarity); CKA is undefined for it")
        return (cross / torch.sqrt(left[:, None] * right[None, :])).numpy()

    def result(self) -> dict[str, np.ndarray]:
        """``cross`` [L_t, L_s], and with ``within`` also ``teacher`` [L_t, L_t] and ``student`` [L_s, L_s]."""
        if self.n_batches == 0:
            raise InputError("MinibatchCKA has seen no batches; call update() first")
        d_t, d_s = self.teacher_self.diagonal(), self.student_self.diagonal()
        out = {"cross": self._normalise(self.cross, d_t, d_s)}
        if self.within:
            out["teacher"] = self._normalise(self.teacher_self, d_t, d_t)
            out["student"] = self._normalise(self.student_self, d_s, d_s)
        return out


def suggest_layer_map(similarity: Any) -> dict[str, Any]:
    """The monotone map student layer i → teacher layer j(i), j non-decreasing, with the highest total similarity.

    ``similarity`` is [L_t, L_s] (teacher rows, student columns), for example a CKA matrix. Dynamic programming over
    student layers. Returns ``pairs`` [(student, teacher), ...] and their ``total``.
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or not np.isfinite(s).all():
        raise InputError(f"similarity must be a finite [teacher layers, student layers] matrix, got shape {s.shape}")
    n_t, n_s = s.shape
    best = np.full((n_s, n_t), -np.inf)
    came_from = np.zeros((n_s, n_t), dtype=int)
    best[0] = s[:, 0]
    for i in range(1, n_s):
        prefix_best = np.maximum.accumulate(best[i - 1])
        prefix_arg = np.array([int(np.argmax(best[i - 1][: j + 1])) for j in range(n_t)])
        best[i] = s[:, i] + prefix_best
        came_from[i] = prefix_arg
    j = int(np.argmax(best[-1]))
    path = [j]
    for i in range(n_s - 1, 0, -1):
        j = int(came_from[i][j])
        path.append(j)
    path.reverse()
    pairs = [(i, t) for i, t in enumerate(path)]
    return {"pairs": pairs, "total": float(sum(s[t, i] for i, t in pairs))}


def map_total(similarity: Any, pairs: Sequence[tuple[int, int]]) -> float:
    """Total similarity of a layer map given as (student, teacher) pairs, for comparing maps."""
    s = np.asarray(similarity, dtype=np.float64)
    return float(sum(s[t, i] for i, t in pairs))
