"""Output-distribution metrics between teacher and student logits.

Conventions (docs/architecture.md): p = softmax(z / T); KL(a‖b) = Σ a (log a − log b), in nats, computed from
log-softmax and summed in float64. "KL" here is the true divergence, never the soft cross-entropy
−Σ p_t log p_s (which is larger by H(p_t)). No T² factor unless ``t2_scale=True`` (the Hinton KD-loss scale).
Functions take torch tensors or numpy arrays shaped [N, C] or [N, T, V] (with an optional [N, T] ``mask``) and
return one value per sample (or per token; NaN where masked); the class axis is the last one. A dataset mean is
one more call (`dataset_mean`). Calibration is in `kdviz.metrics.calibration` (``ece`` is re-exported here) and
class-level matrices in `kdviz.metrics.classwise`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kdviz.errors import InputError
from kdviz.metrics.calibration import ece as ece  # re-exported: calibration is asked for beside the divergences
from kdviz.metrics.tempered import ArrayLike, _as_tensor, _like_input, check_pair
from kdviz.metrics.tempered import check_finite as check_finite  # public here, as before
from kdviz.metrics.tempered import log_probs as log_probs
from kdviz.metrics.tempered import probabilities as probabilities
from kdviz.metrics.vocabulary import check_vocabulary as check_vocabulary  # padded output layers
from kdviz.metrics.vocabulary import token_statistics as token_statistics  # per-token LM summaries, chunked

MEASURES: dict[str, str] = {
    "kl": "forward KL(p_t‖p_s)",
    "reverse_kl": "reverse KL(p_s‖p_t)",
    "js": "Jensen–Shannon",
    "jsd": "generalised JSD(β)",
    "skew_kl": "skewed KL(p_t‖λp_t+(1−λ)p_s)",
    "tv": "total variation",
    "hellinger": "Hellinger",
    "renyi": "Rényi D_α(p_t‖p_s)",
    "teacher_entropy": "teacher entropy H(p_t)",
    "student_entropy": "student entropy H(p_s)",
}
"""Every per-sample measure `divergences` can compute, with its display label (nats, except TV and Hellinger)."""

T2_MEASURES = ("kl", "reverse_kl", "js", "jsd", "skew_kl", "renyi")
"""The KL-type measures that ``t2_scale`` multiplies by T²."""

F64 = torch.float64
CHUNK_ELEMENTS = 1 << 18  # 256k float64 values (2 MB) per array keeps each pass in cache


def divergences(
    z_t: ArrayLike,
    z_s: ArrayLike,
    T: float = 1.0,
    *,
    measures: Sequence[str] | None = None,
    beta: float = 0.5,
    lam: float = 0.1,
    alpha: float = 0.5,
    mask: ArrayLike | None = None,
    t2_scale: bool = False,
) -> dict[str, ArrayLike]:
    """Per-sample (or per-token) measures between teacher and student at temperature T, in one pass.

    ``z_t``, ``z_s``: logits [N, C] or [N, T, V]; ``mask`` [N, T] marks valid tokens (others give NaN).
    ``measures``: names from `MEASURES` (default all). Work is done in float64, on row chunks, with one softmax
    per model shared by every measure (see `measures_from_logits`). ``beta``, ``lam`` and ``alpha`` are the parameters
    of JSD(β), skewed KL(λ) and Rényi D_α. ``t2_scale`` multiplies the KL-type measures (kl, reverse_kl, js, jsd,
    skew_kl, renyi) by T², the Hinton KD-loss scale.
    Returns arrays shaped like the logits without their last axis (numpy in, numpy out; torch in, torch out).
    """
    wanted = list(MEASURES) if measures is None else list(measures)
    unknown = [m for m in wanted if m not in MEASURES]
    if unknown:
        raise InputError(f"unknown measures {unknown}; choose from {list(MEASURES)}")
    if not 0.0 <= beta <= 1.0:
        raise InputError(f"JSD β must lie in [0, 1], got {beta}")
    if not 0.0 <= lam < 1.0:
        raise InputError(f"skewed-KL λ must lie in [0, 1), got {lam}")
    if not (0.0 < alpha < float("inf")):
        raise InputError(f"Rényi α must be positive and finite, got {alpha} (α = 1 is forward KL)")
    if T <= 0:
        raise InputError(f"temperature must be positive, got T={T}")
    zt, zs = _as_tensor(z_t, None), _as_tensor(z_s, None)  # converted to float64 chunk by chunk below
    check_pair(zt, zs)
    if zt.ndim < 2:
        raise InputError(f"logits must have a class axis: [N, C] or [N, T, V], got shape {tuple(zt.shape)}")
    lead_shape, n_classes = zt.shape[:-1], zt.shape[-1]
    flat_t, flat_s = zt.reshape(-1, n_classes), zs.reshape(-1, n_classes)
    check_finite(zt.reshape(zt.shape[0], -1), "teacher logits")
    check_finite(zs.reshape(zs.shape[0], -1), "student logits")
    valid = None if mask is None else _as_tensor(mask, torch.bool).to(zt.device)
    if valid is not None and tuple(valid.shape) != tuple(lead_shape):
        raise InputError(f"mask must have shape {tuple(lead_shape)} like the logits without their class axis, got {tuple(valid.shape)}")
    out = {m: torch.empty(flat_t.shape[0], dtype=F64, device=flat_t.device) for m in wanted}
    step = max(1, CHUNK_ELEMENTS // n_classes)
    for start in range(0, flat_t.shape[0], step):
        chunk_t = flat_t[start : start + step].to(F64) / T
        chunk_s = flat_s[start : start + step].to(F64) / T
        chunk = measures_from_logits(chunk_t, chunk_s, wanted, beta, lam, alpha)
        for name, value in chunk.items():
            out[name][start : start + step] = value
    scale = T * T if t2_scale else 1.0
    result = {}
    for name, value in out.items():
        value = value.reshape(lead_shape)
        if scale != 1.0 and name in T2_MEASURES:
            value = value * scale
        if valid is not None:
            value = torch.where(valid, value, torch.full_like(value, float("nan")))
        result[name] = _like_input(value, z_t)
    return result


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Σ a·b over the last axis, accumulated in float64."""
    if a.dtype == F64 and b.dtype == F64:
        return torch.linalg.vecdot(a, b)
    return (a * b).sum(-1, dtype=F64)


def _xlogy_sum(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ p log q over the last axis, with 0·log 0 = 0, accumulated in float64."""
    return torch.xlogy(p, q).sum(-1, dtype=F64)


def measures_from_logits(
    zt: torch.Tensor, zs: torch.Tensor, wanted: Sequence[str], beta: float = 0.5, lam: float = 0.1, alpha: float = 0.5
) -> dict[str, torch.Tensor]:
    """The requested measures from tempered logits z/T [..., C] of both models. The one place the formulas live.

    Uses log p = z − lse(z), so KL(p_t‖p_s) = Σ p_t (z_t − z_s) − (lse_t − lse_s) and Σ p log p = Σ p z − lse:
    one exp per model and no second log-softmax. Mixture measures use Σ p log m with 0·log 0 = 0. Sums are
    accumulated in float64; in float64 the cancellation error is ~1e-15 even when the distributions are equal.
    """
    out: dict[str, torch.Tensor] = {}
    pt, lse_t = _softmax_and_lse(zt)
    ps, lse_s = _softmax_and_lse(zs)
    d_lse = lse_t - lse_s

    def forward_kl() -> torch.Tensor:
        return _dot(pt, zt - zs) - d_lse

    def reverse() -> torch.Tensor:
        return d_lse - _dot(ps, zt - zs)

    if "kl" in wanted:
        out["kl"] = forward_kl()
    if "reverse_kl" in wanted:
        out["reverse_kl"] = reverse()
    neg_h_t = _dot(pt, zt) - lse_t  # Σ p_t log p_t
    neg_h_s = _dot(ps, zs) - lse_s
    if "teacher_entropy" in wanted:
        out["teacher_entropy"] = -neg_h_t
    if "student_entropy" in wanted:
        out["student_entropy"] = -neg_h_s

    def kl_to_mixture(weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL(p_t‖m), KL(p_s‖m)) with m = weight·p_t + (1 − weight)·p_s."""
        mix = pt * weight + ps * (1.0 - weight)
        return neg_h_t - _xlogy_sum(pt, mix), neg_h_s - _xlogy_sum(ps, mix)

    if "js" in wanted:
        to_t, to_s = kl_to_mixture(0.5)
        out["js"] = 0.5 * (to_t + to_s)
    if "jsd" in wanted:
        if beta == 0.0:
            out["jsd"] = forward_kl()
        elif beta == 1.0:
            out["jsd"] = reverse()
        else:
            to_t, to_s = kl_to_mixture(beta)
            out["jsd"] = (beta * to_t + (1 - beta) * to_s) / (beta * (1 - beta))
    if "skew_kl" in wanted:
        out["skew_kl"] = forward_kl() if lam == 0.0 else kl_to_mixture(lam)[0]
    if "tv" in wanted:
        out["tv"] = 0.5 * (pt - ps).abs().sum(-1, dtype=F64)
    if "hellinger" in wanted:
        out["hellinger"] = ((pt.sqrt() - ps.sqrt()).square().sum(-1, dtype=F64) * 0.5).sqrt()
    if "renyi" in wanted:
        if alpha == 1.0:
            out["renyi"] = forward_kl()
        else:  # log Σ p_t^α p_s^(1−α) = lse(α z_t + (1−α) z_s) − α lse_t − (1−α) lse_s, all in log space
            mixed = torch.logsumexp((alpha * zt + (1.0 - alpha) * zs).to(F64), dim=-1)
            out["renyi"] = (mixed - alpha * lse_t - (1.0 - alpha) * lse_s) / (alpha - 1.0)
    return out


def _softmax_and_lse(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(z), logsumexp(z)) over the last axis with a single exp pass; lse is float64.

    In place where no gradient is needed; out of place when ``z`` requires grad (the KD losses train through it).
    """
    top = z.amax(-1, keepdim=True).detach()
    shifted = z - top
    if z.requires_grad:
        exp = shifted.exp()
        total = exp.sum(-1, keepdim=True)
        return exp / total, (top + total.log()).squeeze(-1).to(F64)
    exp = shifted.exp_()
    total = exp.sum(-1, keepdim=True)
    return exp.div_(total), (top + total.log()).squeeze(-1).to(F64)


def kl(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, mask: ArrayLike | None = None, t2_scale: bool = False) -> ArrayLike:
    """Forward KL(p_t‖p_s) at temperature T per sample/token (mode-covering); ×T² if ``t2_scale`` (KD-loss scale).

    This is the divergence itself, not the soft cross-entropy −Σ p_t log p_s = KL + H(p_t).
    """
    return divergences(z_t, z_s, T, measures=["kl"], mask=mask, t2_scale=t2_scale)["kl"]


def reverse_kl(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, mask: ArrayLike | None = None, t2_scale: bool = False) -> ArrayLike:
    """Reverse KL(p_s‖p_t) at temperature T per sample/token (mode-seeking)."""
    return divergences(z_t, z_s, T, measures=["reverse_kl"], mask=mask, t2_scale=t2_scale)["reverse_kl"]


def js(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, mask: ArrayLike | None = None) -> ArrayLike:
    """Jensen–Shannon divergence ½KL(p_t‖m) + ½KL(p_s‖m), m = ½(p_t + p_s); symmetric, at most ln 2."""
    return divergences(z_t, z_s, T, measures=["js"], mask=mask)["js"]


def jsd(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, beta: float = 0.5, mask: ArrayLike | None = None) -> ArrayLike:
    """Generalised JSD(β), normalised by β(1−β) so that β = 0 gives forward KL and β = 1 reverse KL."""
    return divergences(z_t, z_s, T, measures=["jsd"], beta=beta, mask=mask)["jsd"]


def skew_kl(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, lam: float = 0.1, mask: ArrayLike | None = None) -> ArrayLike:
    """Skewed KL(p_t ‖ λp_t + (1−λ)p_s) (DistiLLM); λ = 0 is forward KL, and it stays finite where p_s → 0."""
    return divergences(z_t, z_s, T, measures=["skew_kl"], lam=lam, mask=mask)["skew_kl"]


def renyi(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, alpha: float = 0.5, mask: ArrayLike | None = None,
          t2_scale: bool = False) -> ArrayLike:
    """Rényi divergence D_α(p_t‖p_s) = log Σ p_t^α p_s^(1−α) / (α − 1), in nats, for α > 0. α → 1 is forward KL
    (α = 1 is computed as KL); α = ½ is −2 log of the Bhattacharyya coefficient; larger α weighs the classes where
    the student falls short of the teacher more."""
    return divergences(z_t, z_s, T, measures=["renyi"], alpha=alpha, mask=mask, t2_scale=t2_scale)["renyi"]


def tv(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, mask: ArrayLike | None = None) -> ArrayLike:
    """Total variation ½Σ|p_t − p_s|, in [0, 1]."""
    return divergences(z_t, z_s, T, measures=["tv"], mask=mask)["tv"]


def hellinger(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, mask: ArrayLike | None = None) -> ArrayLike:
    """Hellinger distance ‖√p_t − √p_s‖₂ / √2, in [0, 1]."""
    return divergences(z_t, z_s, T, measures=["hellinger"], mask=mask)["hellinger"]


def entropy(z: ArrayLike, T: float = 1.0, *, mask: ArrayLike | None = None) -> ArrayLike:
    """Entropy of softmax(z / T) in nats, per sample/token."""
    return divergences(z, z, T, measures=["teacher_entropy"], mask=mask)["teacher_entropy"]


def dataset_mean(values: ArrayLike) -> float:
    """Mean over samples/tokens, skipping NaN (masked) entries."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")


def dkd_parts(z_t: ArrayLike, z_s: ArrayLike, target: ArrayLike, T: float = 1.0) -> dict[str, ArrayLike]:
    """Decoupled KD (Zhao et al. 2022): split KL(p_t‖p_s) into target and non-target parts, per sample.

    With b = [p_y, 1 − p_y] and p̂_i = p_i / (1 − p_y) for i ≠ y:
    ``tckd`` = KL(b_t‖b_s), ``nckd`` = KL(p̂_t‖p̂_s), and ``kl`` = tckd + (1 − p_t,y)·nckd exactly
    (``nckd_weight`` = 1 − p_t,y). With two classes p̂ has a single entry, so NCKD is 0 (``binary`` is True):
    there is no non-target mass to spread. Everything is computed in log space, in float64.
    DKD loss = (α·tckd + β·nckd)·T².
    """
    zt, zs = _as_tensor(z_t), _as_tensor(z_s)
    check_pair(zt, zs)
    if zt.ndim != 2:
        raise InputError(f"dkd_parts takes logits [N, C], got shape {tuple(zt.shape)}; flatten token positions first")
    n_classes = zt.shape[-1]
    if n_classes < 2:
        raise InputError("dkd_parts needs at least two classes")
    check_finite(zt, "teacher logits")
    check_finite(zs, "student logits")
    y = _as_tensor(target, torch.long).reshape(-1)
    if y.shape[0] != zt.shape[0] or bool(((y < 0) | (y >= n_classes)).any()):
        raise InputError(f"target must hold one class index in [0, {n_classes}) per sample; got shape {tuple(y.shape)}")
    parts = dkd_terms(log_probs(zt, T), log_probs(zs, T), y)
    result = {name: _like_input(value, z_t) for name, value in parts.items()}
    result["binary"] = n_classes == 2
    return result


def kl_rows(lt: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
    """KL(p_t‖p_s) = Σ p_t (log p_t − log p_s) per row, from log-probabilities [..., C]; differentiable and in their
    dtype (the training losses' form; `divergences` is the float64 form the views use)."""
    return (lt.exp() * (lt - ls)).sum(-1)


def dkd_terms(lt: torch.Tensor, ls: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The DKD split from log-probabilities [N, C] of teacher and student and targets [N]: the one implementation,
    shared by `dkd_parts` (float64, for views) and `kdviz.losses.DKD` (differentiable, in the training dtype).

    Returns per sample ``tckd`` = KL(b_t‖b_s), ``nckd`` = KL(p̂_t‖p̂_s), ``nckd_weight`` = 1 − p_t,y, ``kl`` and
    ``p_t_target``; kl = tckd + nckd_weight·nckd. Log space throughout: log(1 − p_y) is a logsumexp over the other
    classes, so nothing cancels.
    """
    is_target = torch.nn.functional.one_hot(y, lt.shape[-1]).bool()
    lt_y, ls_y = lt.gather(1, y[:, None])[:, 0], ls.gather(1, y[:, None])[:, 0]
    rest_t = torch.logsumexp(lt.masked_fill(is_target, -torch.inf), dim=1)  # log(1 − p_t,y), exact in log space
    rest_s = torch.logsumexp(ls.masked_fill(is_target, -torch.inf), dim=1)
    pt_y = lt_y.exp()
    tckd = pt_y * (lt_y - ls_y) + (1 - pt_y) * (rest_t - rest_s)
    hat_t, hat_s = lt - rest_t[:, None], ls - rest_s[:, None]  # log p̂ over non-target classes
    nckd = torch.where(is_target, torch.zeros_like(hat_t), hat_t.exp() * (hat_t - hat_s)).sum(1)
    return {"tckd": tckd, "nckd": nckd, "nckd_weight": 1 - pt_y, "kl": kl_rows(lt, ls), "p_t_target": pt_y}


def topk_agreement(z_t: ArrayLike, z_s: ArrayLike, k: int = 5) -> dict[str, ArrayLike]:
    """Per sample: ``top1`` = 1 where the argmaxes agree; ``overlap`` = |top_k(t) ∩ top_k(s)| / k."""
    zt, zs = _as_tensor(z_t, None), _as_tensor(z_s, None)
    check_pair(zt, zs)
    k = int(k)
    if not 1 <= k <= zt.shape[-1]:
        raise InputError(f"k must lie in [1, {zt.shape[-1]}] (the number of classes), got {k}")
    top_t, top_s = zt.topk(k, dim=-1).indices, zs.topk(k, dim=-1).indices
    overlap = (top_t.unsqueeze(-1) == top_s.unsqueeze(-2)).any(-1).sum(-1).double() / k
    top1 = (zt.argmax(-1) == zs.argmax(-1)).double()
    return {"top1": _like_input(top1, z_t), "overlap": _like_input(overlap, z_t)}


def rank_agreement(z_t: ArrayLike, z_s: ArrayLike, target: ArrayLike) -> dict[str, np.ndarray]:
    """Per sample, how alike the two models rank the non-target classes ("dark knowledge"): Spearman ρ and Kendall τ-b.

    Needs at least 3 classes (2 non-target classes to rank). Ties get average ranks (ρ) and the τ-b correction.
    """
    zt, zs = (_as_tensor(z, torch.float64).cpu().numpy() for z in (z_t, z_s))
    if zt.shape != zs.shape or zt.ndim != 2:
        raise InputError(f"rank_agreement takes teacher and student logits [N, C] of one shape, got {zt.shape} and {zs.shape}")
    n, n_classes = zt.shape
    if n_classes < 3:
        raise InputError(f"rank agreement over non-target classes needs at least 3 classes, got {n_classes}")
    y = np.asarray(_as_tensor(target, torch.long).cpu()).reshape(-1)
    keep = np.ones((n, n_classes), dtype=bool)
    keep[np.arange(n), y] = False
    rest_t, rest_s = zt[keep].reshape(n, -1), zs[keep].reshape(n, -1)
    from scipy.stats import rankdata

    rank_t, rank_s = rankdata(rest_t, axis=1), rankdata(rest_s, axis=1)
    rank_t -= rank_t.mean(1, keepdims=True)
    rank_s -= rank_s.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        spearman = (rank_t * rank_s).sum(1) / np.sqrt((rank_t**2).sum(1) * (rank_s**2).sum(1))
    return {"spearman": spearman, "kendall": _kendall_tau_b(rest_t, rest_s)}


def _kendall_tau_b(a: np.ndarray, b: np.ndarray, max_elements: int = 1 << 24) -> np.ndarray:
    """Row-wise Kendall τ-b of [n, m] arrays, over all m(m−1)/2 pairs, in row chunks of bounded size."""
    n, m = a.shape
    i, j = np.triu_indices(m, k=1)
    out = np.empty(n)
    step = max(1, max_elements // max(1, len(i)))
    for start in range(0, n, step):
        sa = np.sign(a[start : start + step, j] - a[start : start + step, i])
        sb = np.sign(b[start : start + step, j] - b[start : start + step, i])
        concordance = (sa * sb).sum(1)
        untied_a, untied_b = np.abs(sa).sum(1), np.abs(sb).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + step] = concordance / np.sqrt(untied_a * untied_b)
    return out


def correct_count(z: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> tuple[int, int]:
    """(number of samples or tokens whose argmax equals the label, number counted); labels < 0 are ignored."""
    predictions = _as_tensor(z, None).argmax(dim=-1)
    target = _as_tensor(labels, torch.long).to(predictions.device)
    valid = target >= 0
    if mask is not None:
        valid &= _as_tensor(mask, torch.bool).to(predictions.device)
    return int(((predictions == target) & valid).sum()), int(valid.sum())


def accuracy(z: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Share of samples (or unmasked tokens) whose argmax equals the label; labels < 0 are ignored."""
    correct, total = correct_count(z, labels, mask)
    return correct / total if total else float("nan")


def cross_entropy(z: ArrayLike, labels: ArrayLike, T: float = 1.0) -> np.ndarray:
    """[N] −log p(y) per sample from logits [N, C] at temperature T, in float64: the student's distance to the labels."""
    lp = log_probs(_as_tensor(z), T)
    y = _as_tensor(labels, torch.long).reshape(-1)
    if lp.ndim != 2 or y.shape[0] != lp.shape[0] or bool(((y < 0) | (y >= lp.shape[1])).any()):
        raise InputError(f"cross_entropy takes logits [N, C] and class indices [N]; got {tuple(lp.shape)} and {tuple(y.shape)}")
    return (-lp.gather(1, y[:, None])[:, 0]).cpu().numpy()


def nll_sum(true_prob: ArrayLike, mask: ArrayLike) -> tuple[float, int]:
    """(Σ −log p(true token), count) over the masked positions, in float64; perplexity = exp(sum / count)."""
    prob = _as_tensor(true_prob)
    valid = _as_tensor(mask, torch.bool).to(prob.device)
    return float(-torch.log(prob[valid]).sum()), int(valid.sum())


def perplexity(true_prob: ArrayLike, mask: ArrayLike) -> float:
    """exp of the mean negative log-likelihood of the true tokens over the masked positions."""
    total, count = nll_sum(true_prob, mask)
    return float(np.exp(total / count)) if count else float("nan")
