"""Representation similarity between teacher and student layers: CKA (biased and debiased), streaming minibatch CKA
over every layer pair, and the monotone layer-map suggestion.

Conventions (docs/architecture.md): features [n, d] are mean-centred in their own precision before any Gram product
(exact for HSIC, and it keeps float32 features with a large offset from losing every digit to it); the Gram is taken
in that precision and everything after it (centring of the Gram, the HSIC sums) in float64. The debiased estimator
uses U-centred Grams (unbiased HSIC, Song et al. 2012) and needs n ≥ 4; it can be slightly negative, and is returned
as it is, never clamped. Biased linear CKA is inflated when the width is much larger than n.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError
from kdviz.metrics.gram_terms import F64, GramBuilder, as_features, check_finite_gram, hsic_from_terms


def centred(x: torch.Tensor) -> torch.Tensor:
    """Subtract the per-column mean, in the input's precision.

    Removing a large common offset before the product is what keeps float32 Grams from overflowing; the rounding
    left in the mean is a constant shift, which the Gram centring then removes exactly.
    """
    return x - x.mean(dim=0, keepdim=True)


def linear_gram(x: torch.Tensor, out: torch.Tensor | None = None, what: str = "features") -> torch.Tensor:
    """Gram matrix X_c X_cᵀ [n, n] of column-centred features, in float64 (written into ``out`` when given)."""
    xc = centred(x)
    product = xc @ xc.T
    gram = product.to(F64) if out is None else out.copy_(product)
    check_finite_gram(gram.diagonal(), x, what)
    return gram


def rbf_gram(x: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """RBF kernel exp(−‖xi − xj‖² / (2σ²)) [n, n]; σ defaults to the median pairwise distance."""
    xc = centred(x).to(F64)
    if not bool(torch.isfinite(xc).all()):
        raise InputError(f"features contain NaN or inf at sample index {torch.nonzero(~torch.isfinite(xc).all(1)).flatten()[:5].tolist()}")
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


def u_centre_gram(gram: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """U-centring (Székely & Rizzo): ⟨U(K), U(L)⟩ / (n(n−3)) is the unbiased HSIC. Needs n ≥ 4.

    Steps: zero the diagonal; m = column sums / (n−2); m −= Σm / (2(n−1)); K − m1ᵀ − 1mᵀ; zero the diagonal.
    """
    n = gram.shape[0]
    if n < 4:
        raise InputError(f"the unbiased HSIC needs at least 4 samples per batch, got {n}; use larger batches or unbiased=False")
    k = gram if inplace else gram.clone()
    k.fill_diagonal_(0)
    means = k.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    k -= means[:, None]
    k -= means[None, :]
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
    fx, fy = as_features(x, "x"), as_features(y, "y")
    if fx.shape[0] != fy.shape[0]:
        raise InputError(f"x and y must describe the same samples: {fx.shape[0]} vs {fy.shape[0]} rows")
    if kernel == "linear":
        gx, gy = linear_gram(fx, what="x"), linear_gram(fy, what="y")
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

    For each batch, every layer's Gram matrix is built once, as its lower block triangle (`gram_terms.GramBuilder`:
    column-centred features, about 5/8 of a full product at n = 1,024), and chunked products of those blocks summed
    in float64, plus O(n) terms per pair, give the HSIC of every pair (`gram_terms.hsic_from_terms`), with no centred
    n × n matrix built. The estimate is
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
        self._grams = GramBuilder()

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
        if not self.unbiased and n < 2:
            raise InputError("a batch of 1 sample has no biased HSIC (needs n ≥ 2); drop it")
        t, s = self._grams.terms("teacher", teacher, n), self._grams.terms("student", student, n)
        self.cross += hsic_from_terms(t, s, n, unbiased=self.unbiased).cpu()
        if self.within:
            self.teacher_self += hsic_from_terms(t, t, n, unbiased=self.unbiased).cpu()
            self.student_self += hsic_from_terms(s, s, n, unbiased=self.unbiased).cpu()
        else:
            self.teacher_self.diagonal().add_(hsic_from_terms(t, t, n, unbiased=self.unbiased, paired=True).cpu())
            self.student_self.diagonal().add_(hsic_from_terms(s, s, n, unbiased=self.unbiased, paired=True).cpu())
        self.n_batches += 1
        self.n_samples += n

    def all_reduce(self, group: Any = None) -> None:
        """Sum the accumulators across torch.distributed ranks (each rank fed its own batches); ``group``: the process
        group (default: the default one; the accumulators are CPU tensors, so give a gloo group under NCCL)."""
        import torch.distributed as dist

        for tensor in (self.cross, self.teacher_self, self.student_self):
            dist.all_reduce(tensor, group=group)
        counts = torch.tensor([self.n_batches, self.n_samples], dtype=F64)
        dist.all_reduce(counts, group=group)
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
        running_arg = 0  # argmax of best[i - 1][: j + 1], kept as j grows
        for j in range(n_t):
            if best[i - 1][j] > best[i - 1][running_arg]:
                running_arg = j
            best[i, j] = s[j, i] + best[i - 1][running_arg]
            came_from[i, j] = running_arg
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


POOLING_CONV = ("flatten", "pool")
POOLING_TOKENS = ("mean", "summary", "tokens")
SUMMARY_TOKENS = ("first", "last")


def token_mask(features: torch.Tensor, mask: Any | None) -> torch.Tensor:
    """[n, T] bool: which tokens of token features [n, T, D] are real; ``mask`` [n, T] when its length matches the
    features' (an attention mask), else every token (a vision transformer's patches and CLS)."""
    if mask is not None:
        valid = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        if tuple(valid.shape) == tuple(features.shape[:2]):
            return valid.to(features.device).bool()
    return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)


def mean_over_tokens(features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[n, D] mean of token features [n, T, D] over each sample's real tokens ``valid`` [n, T] (0 for none)."""
    weights = valid.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(1) / weights.sum(1).clamp_min(1)


def summary_token(features: torch.Tensor, valid: torch.Tensor, which: str) -> torch.Tensor:
    """[n, D] one token per sample of token features [n, T, D]: the first real token (``"first"``: CLS, the
    encoder's summary) or the last (``"last"``: a causal LM's, the only one that has read the whole input; found
    through ``valid`` [n, T], so left and right padding both work)."""
    if which not in SUMMARY_TOKENS:
        raise InputError(f"the summary token must be one of {SUMMARY_TOKENS}, got {which!r}")
    positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    if which == "first":
        index = torch.where(valid, positions, valid.shape[1]).amin(1).clamp_max(valid.shape[1] - 1)
    else:
        index = torch.where(valid, positions, -1).amax(1).clamp_min(0)
    return features[torch.arange(features.shape[0], device=features.device), index]


def pool_features(x: Any, *, conv: str = "flatten", tokens: str = "mean", mask: Any | None = None,
                  summary: str = "first") -> torch.Tensor:
    """Turn one batch of features into CKA samples [m, d].

    - conv maps [n, C, H, W]: ``conv="flatten"`` (default, as in Kornblith et al.) or ``"pool"`` (global average).
    - token features [n, T, D]: ``tokens="mean"`` (default: mean over the valid tokens of each sample, ``mask``
      [n, T]), ``"summary"`` (one token per sample, ``summary`` = ``"first"`` or ``"last"``: `summary_token`) or
      ``"tokens"`` (every valid token is a sample of its own, so m = number of valid tokens).
    - anything else is flattened per sample (features pooled while capturing are already [n, D]).
    """
    f = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if conv not in POOLING_CONV or tokens not in POOLING_TOKENS:
        raise InputError(f"pooling must be conv in {POOLING_CONV} and tokens in {POOLING_TOKENS}, got {conv!r}, {tokens!r}")
    if f.ndim == 4:
        return f.mean(dim=(2, 3)) if conv == "pool" else f.reshape(f.shape[0], -1)
    if f.ndim == 3:
        valid = token_mask(f, mask)
        if tokens == "tokens":
            return f[valid]
        return summary_token(f, valid, summary) if tokens == "summary" else mean_over_tokens(f, valid)
    return f.reshape(f.shape[0], -1)


def add_pooled_batch(accumulator: MinibatchCKA, teacher: Sequence[Any], student: Sequence[Any], *, conv: str, tokens: str,
                     mask: Any | None, summary: str = "first") -> bool:
    """Pool one batch of every layer (`pool_features`) and add it; returns False for a batch the estimator must skip.

    A batch under 4 samples cannot enter the unbiased estimator; once earlier batches carry the estimate (an uneven
    last batch), it is skipped rather than failing the whole computation.
    """
    n = int(np.shape(teacher[0])[0])
    if accumulator.unbiased and n < 4 and accumulator.n_batches:
        return False
    accumulator.update([pool_features(f, conv=conv, tokens=tokens, mask=mask, summary=summary) for f in teacher],
                       [pool_features(f, conv=conv, tokens=tokens, mask=mask, summary=summary) for f in student])
    return True


def cka_result(accumulator: MinibatchCKA, teacher_layers: Sequence[str], student_layers: Sequence[str], *, conv: str,
               tokens: str) -> dict[str, Any]:
    """The matrices of a finished accumulator with what they describe: layer names, n, batches and settings."""
    return {**accumulator.result(), "teacher_layers": list(teacher_layers), "student_layers": list(student_layers),
            "n": accumulator.n_samples, "n_batches": accumulator.n_batches, "unbiased": accumulator.unbiased,
            "conv": conv, "tokens": tokens}
