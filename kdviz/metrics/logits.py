"""Output-distribution metrics between teacher and student logits.

Conventions (see KD-NOTES.md): p = softmax(z / T); KL(a‖b) = Σ a (log a − log b), in nats, computed from
log-softmax and summed in float64. "KL" here is the true divergence, never the soft cross-entropy
−Σ p_t log p_s (which is larger by H(p_t)). No T² factor unless ``t2_scale=True`` (the Hinton KD-loss scale).
Functions take torch tensors or numpy arrays shaped [N, C] or [N, T, V] and return one value per sample
(or per token); the class axis is the last one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError

ArrayLike = Any  # numpy array or torch tensor


def _as_tensor(z: ArrayLike, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    tensor = z if isinstance(z, torch.Tensor) else torch.as_tensor(np.asarray(z))
    return tensor if dtype is None else tensor.to(dtype)


def _like_input(value: torch.Tensor, reference: ArrayLike) -> ArrayLike:
    return value if isinstance(reference, torch.Tensor) else value.detach().cpu().numpy()


def check_finite(z: torch.Tensor, what: str, offset: int = 0) -> None:
    """Raise `InputError` naming the first samples (global index = ``offset`` + row) whose values are NaN or inf."""
    bad = ~torch.isfinite(z.reshape(z.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        rows = (torch.nonzero(bad).flatten()[:5] + offset).tolist()
        raise InputError(f"{what} contain NaN or inf at sample index {rows}; check the model and the inputs of those samples")


def check_pair(z_t: torch.Tensor, z_s: torch.Tensor) -> None:
    """Teacher and student logits must share their shape, class axis included."""
    if z_t.shape != z_s.shape:
        raise InputError(
            f"teacher logits have shape {tuple(z_t.shape)} but student logits have shape {tuple(z_s.shape)}; "
            "the two models must predict over the same classes (vocabulary) for the same samples"
        )


def log_probs(z: ArrayLike, T: float = 1.0) -> torch.Tensor:
    """log softmax(z / T) over the last axis, in the input's float precision (float64 for numpy input)."""
    if T <= 0:
        raise InputError(f"temperature must be positive, got T={T}")
    tensor = _as_tensor(z, None)
    if not tensor.is_floating_point():
        tensor = tensor.double()
    return torch.log_softmax(tensor / T, dim=-1)


def kl_from_log_probs(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """KL(a‖b) = Σ a (log a − log b) over the last axis, summed in float64; terms with a = 0 contribute 0."""
    p_a = logp_a.exp()
    terms = torch.where(p_a > 0, p_a * (logp_a - logp_b), torch.zeros((), dtype=p_a.dtype, device=p_a.device))
    return terms.sum(dim=-1, dtype=torch.float64)


def entropy_from_log_probs(logp: torch.Tensor) -> torch.Tensor:
    """H(p) = −Σ p log p over the last axis, summed in float64."""
    p = logp.exp()
    terms = torch.where(p > 0, -p * logp, torch.zeros((), dtype=p.dtype, device=p.device))
    return terms.sum(dim=-1, dtype=torch.float64)


def kl(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, t2_scale: bool = False) -> ArrayLike:
    """Forward KL(p_t‖p_s) at temperature T per sample/token [N] or [N, T]; ×T² if ``t2_scale`` (KD-loss scale)."""
    lt, ls = _pair_log_probs(z_t, z_s, T)
    value = kl_from_log_probs(lt, ls) * (T * T if t2_scale else 1.0)
    return _like_input(value, z_t)


def reverse_kl(z_t: ArrayLike, z_s: ArrayLike, T: float = 1.0, *, t2_scale: bool = False) -> ArrayLike:
    """Reverse KL(p_s‖p_t) at temperature T (mode-seeking) per sample/token."""
    lt, ls = _pair_log_probs(z_t, z_s, T)
    value = kl_from_log_probs(ls, lt) * (T * T if t2_scale else 1.0)
    return _like_input(value, z_t)


def entropy(z: ArrayLike, T: float = 1.0) -> ArrayLike:
    """Entropy of softmax(z / T) in nats, per sample/token."""
    return _like_input(entropy_from_log_probs(log_probs(_as_tensor(z), T)), z)


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


def nll_sum(true_prob: ArrayLike, mask: ArrayLike) -> tuple[float, int]:
    """(Σ −log p(true token), count) over the masked positions, in float64; perplexity = exp(sum / count)."""
    prob = _as_tensor(true_prob)
    valid = _as_tensor(mask, torch.bool).to(prob.device)
    return float(-torch.log(prob[valid]).sum()), int(valid.sum())


def perplexity(true_prob: ArrayLike, mask: ArrayLike) -> float:
    """exp of the mean negative log-likelihood of the true tokens over the masked positions."""
    total, count = nll_sum(true_prob, mask)
    return float(np.exp(total / count)) if count else float("nan")


def token_statistics(
    z_t: torch.Tensor, z_s: torch.Tensor, targets: torch.Tensor | None, topk: int = 10
) -> dict[str, torch.Tensor]:
    """Per-token summaries of two [B, T, V] logit tensors, so vocabulary-sized outputs need not be stored.

    Returns ``kl`` and ``reverse_kl`` [B, T] (float64 sums of float32 log-softmax terms), and per model
    ``{teacher,student}_entropy`` [B, T], ``_topk_ids`` / ``_topk_probs`` [B, T, k] and, when ``targets``
    [B, T] is given (−100 or any negative marks no target), ``_true_prob`` [B, T] (0 where there is no target).
    """
    check_pair(z_t, z_s)
    lt = torch.log_softmax(z_t.float(), dim=-1)
    ls = torch.log_softmax(z_s.float(), dim=-1)
    stats = {"kl": kl_from_log_probs(lt, ls), "reverse_kl": kl_from_log_probs(ls, lt)}
    k = min(topk, z_t.shape[-1])
    for role, logp in (("teacher", lt), ("student", ls)):
        stats[f"{role}_entropy"] = entropy_from_log_probs(logp)
        top_logp, top_ids = logp.topk(k, dim=-1)
        stats[f"{role}_topk_ids"] = top_ids.to(torch.int32)
        stats[f"{role}_topk_probs"] = top_logp.exp()
        if targets is not None:
            safe = targets.clamp(min=0).unsqueeze(-1)
            true_prob = logp.gather(-1, safe).squeeze(-1).exp()
            stats[f"{role}_true_prob"] = torch.where(targets >= 0, true_prob, torch.zeros_like(true_prob))
    return stats


def _pair_log_probs(z_t: ArrayLike, z_s: ArrayLike, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    zt, zs = _as_tensor(z_t), _as_tensor(z_s)
    check_pair(zt, zs)
    check_finite(zt.reshape(zt.shape[0], -1), "teacher logits")
    check_finite(zs.reshape(zs.shape[0], -1), "student logits")
    return log_probs(zt, T), log_probs(zs, T)
