"""What capture keeps of attention maps for every sample, so that a run needs exact [H, T, T] maps for none of them:
per-head summaries, pooled thumbnails, and teacher–student divergences between heads and between layers.

A BERT-base pair at 512 tokens has 216 heads of 512 × 512: 113 MB of float16 per sample. Its digest is under
0.5 MB: [H, 5] summaries, [H, 32, 32] thumbnails, [L_t, L_s] layer divergences and [H_t, H_s] head divergences per
mapped layer pair. Every function takes one batch of one layer, [B, H, T, T], and returns per-sample rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kdviz.errors import InputError
from kdviz.metrics import attention as attn

ArrayLike = attn.ArrayLike
SUMMARY_NAMES = tuple(attn.SUMMARIES)  # the order of the last axis of `per_sample_summaries`
THUMBNAIL_SIDE = 32  # bins per side of a stored thumbnail: 216 BERT-base heads take 0.44 MB in float16


def pool_map(a: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink [..., T, T] attention to at most [..., side, side] by token bins: keys summed, queries averaged, so every
    row still sums to 1. Returns the maps and the bin start indices [S]."""
    t = a.shape[-1]
    edges = bin_starts(t, side)
    if len(edges) == t:
        return a, edges
    counts = np.diff(np.append(edges, t))
    pooled = np.add.reduceat(np.add.reduceat(a, edges, axis=-1), edges, axis=-2) / counts[:, None]
    return pooled, edges


def bin_starts(length: int, side: int) -> np.ndarray:
    """[S] first token of each of the S = min(length, side) bins `pool_map` makes of ``length`` tokens."""
    if length <= side:
        return np.arange(length)
    return np.linspace(0, length, side + 1).round().astype(int)[:-1]


def real_lengths(mask: ArrayLike | None, n: int, t: int) -> np.ndarray:
    """[N] number of real tokens of each sample (padding comes at the end, as capture stores it)."""
    return attn.as_mask(mask, n, t).sum(1).numpy().astype(np.int64)


def per_sample_summaries(a: ArrayLike, *, mask: ArrayLike | None = None, positions: ArrayLike | None = None
                         ) -> np.ndarray:
    """[N, H, S] float32: `metrics.attention.head_summaries` of each sample alone, S = `SUMMARY_NAMES`.

    The same formulas as `head_summaries` (rows renormalised over real keys, means over real queries), computed in
    one float32 pass over each sample's [H, T, T] instead of one float64 pass per summary: they are stored as
    float32, and no two large sums are subtracted."""
    maps = attn.maps_view(a)
    n, heads, t = maps.shape[0], maps.shape[1], maps.shape[-1]
    valid = attn.as_mask(mask, n, t)
    pos = torch.as_tensor(np.asarray(positions if positions is not None else attn.token_positions(t), dtype=np.float64))
    pos = pos[:, None] if pos.ndim == 1 else pos
    if pos.shape[0] != t:
        raise InputError(f"positions has {pos.shape[0]} rows but the attention maps have {t} tokens")
    placed = ~torch.isnan(pos).any(1)
    distance = torch.cdist(torch.nan_to_num(pos), torch.nan_to_num(pos)).to(torch.float32)
    lower = torch.tril(torch.ones(t, t))
    causal = t > 1 and float(torch.triu(maps[0].to(torch.float32), diagonal=1).abs().max()) <= 1e-6  # the model's mask
    out = np.empty((n, heads, len(SUMMARY_NAMES)), np.float32)
    for i in range(n):
        m = maps[i].to(device="cpu", dtype=torch.float32)  # [H, T, T]
        real = valid[i].to(torch.float32)
        rows = real.sum().clamp_min(1)

        def query_mean(values: torch.Tensor, weights: torch.Tensor = real, count: torch.Tensor = rows) -> torch.Tensor:
            return (values * weights).sum(-1) / count  # [H, T] -> [H]

        p = _rows_over(m, real)
        entropy = query_mean(torch.special.entr(p).sum(-1))
        located = (valid[i] & placed).to(torch.float32)
        p_located = p if bool(placed.all()) else _rows_over(m, located)
        dist = query_mean(torch.einsum("hqk,qk->hq", p_located, distance), located, located.sum().clamp_min(1))
        first = query_mean(p[..., 0])
        diagonal = query_mean(torch.diagonal(p, dim1=-2, dim2=-1))
        share = torch.einsum("hqk,q->hk", p, real) / rows  # [H, T] share of each key over real queries
        allowed = real[:, None] * real[None, :] * (lower if causal else 1.0)
        fair = (allowed / allowed.sum(-1, keepdim=True).clamp_min(1)).sum(0) / rows  # [T]
        ratio = torch.where(fair > 0, share / torch.where(fair > 0, fair, 1.0), 0.0).max(-1).values
        values = {"entropy": entropy, "distance": dist, "cls": first, "diagonal": diagonal, "sink": ratio}
        out[i] = torch.stack([values[name] for name in SUMMARY_NAMES], dim=1).numpy()
    if not np.isfinite(out).all():
        raise InputError("attention contains NaN or inf; check the model and the inputs (the values must be finite)")
    return out


def _rows_over(m: torch.Tensor, keys: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """[..., T, T] rows restricted to the keys marked in ``keys`` [T] (smoothed by ``eps``) and rescaled to sum 1."""
    p = (m + eps) * keys if eps else m * keys
    return p.div_(p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny))


def _row_kl_sums(t: torch.Tensor, s: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """[A, B] Σ over real query rows of KL(t_a row ‖ s_b row), t [A, T, T] and s [B, T, T] (renormalised rows).

    Each row's sums over T keys are float32 (one batched product per query row); the sum over rows is float64."""
    self_term = torch.xlogy(t, t).sum(-1)  # [A, T]
    log_s = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))
    cross = torch.bmm(t.transpose(0, 1), log_s.permute(1, 2, 0))  # [T, A, B]
    per_row = (self_term.T[:, :, None] - cross).to(torch.float64)
    return (per_row * rows.to(torch.float64)[:, None, None]).sum(0).numpy()


def head_divergences(a_t: ArrayLike, a_s: ArrayLike, *, mask: ArrayLike | None = None, eps: float = attn.EPS) -> np.ndarray:
    """[N, H_t, H_s] float32 KL(teacher head ‖ student head) of each sample, the mean over its real query rows:
    `metrics.attention.per_sample_divergence` with float32 rows and float64 sums over rows, for capture."""
    t_maps, s_maps = attn.maps_view(a_t, "teacher attention"), attn.maps_view(a_s, "student attention")
    n, length = t_maps.shape[0], t_maps.shape[-1]
    valid = attn.as_mask(mask, n, length)
    out = np.zeros((n, t_maps.shape[1], s_maps.shape[1]))
    for i in range(n):
        real = valid[i].to(torch.float32)
        t = _rows_over(t_maps[i].to(device="cpu", dtype=torch.float32), real, eps)
        s = _rows_over(s_maps[i].to(device="cpu", dtype=torch.float32), real, eps)
        out[i] = _row_kl_sums(t, s, real) / max(float(real.sum()), 1.0)
    return np.maximum(out, 0.0).astype(np.float32)


def thumbnails(a: ArrayLike, *, mask: ArrayLike | None = None, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """[N, H, P, P] float16, P = min(T, side): each sample's maps over its real tokens, pooled by `pool_map` into
    min(real tokens, P) bins per side, at the top left (the rest is 0). Rows still sum to 1."""
    maps = attn.maps_view(a)
    n, heads, t = maps.shape[0], maps.shape[1], maps.shape[-1]
    lengths = real_lengths(mask, n, t)
    p = min(t, side)
    out = np.zeros((n, heads, p, p), np.float16)
    for i, length in enumerate(lengths):
        if length == 0:
            continue
        real = maps[i, :, :length, :length].to(torch.float32).cpu().numpy()
        real = real / np.maximum(real.sum(-1, keepdims=True), np.finfo(np.float32).tiny)  # rows over the real keys
        pooled, _ = pool_map(real, p)
        out[i, :, : pooled.shape[-1], : pooled.shape[-1]] = pooled
    return out


def thumbnail_side(length: int, stored_side: int) -> int:
    """How many bins per side of a stored thumbnail hold a sample of ``length`` real tokens."""
    return int(min(length, stored_side))


def head_means(a: ArrayLike) -> torch.Tensor:
    """[N, T, T] float32 head-averaged attention of one layer [N, H, T, T]."""
    return attn.maps_view(a).to(torch.float32).mean(1).cpu()


def layer_divergences(teacher_layers: Sequence[ArrayLike], student_layers: Sequence[ArrayLike], *,
                      mask: ArrayLike | None = None, eps: float = attn.EPS) -> np.ndarray:
    """[N, L_t, L_s] float32: each sample's KL between the head-averaged attention of every teacher and every student
    layer (`metrics.attention.layer_divergence` of one sample). Each layer is [N, H, T, T]."""
    return layer_divergences_from_means([head_means(a) for a in teacher_layers], [head_means(a) for a in student_layers],
                                        mask=mask, eps=eps)


def layer_divergences_from_means(teacher_means: Sequence[torch.Tensor], student_means: Sequence[torch.Tensor], *,
                                 mask: ArrayLike | None = None, eps: float = attn.EPS) -> np.ndarray:
    """`layer_divergences` from each layer's head means [N, T, T] (`head_means`): capture keeps only those while the
    layers stream by. The cross terms of all layer pairs are one batched product per sample
    (float32 rows, float64 sums over rows)."""
    t_means, s_means = torch.stack(list(teacher_means), 1), torch.stack(list(student_means), 1)
    n, length = t_means.shape[0], t_means.shape[-1]
    valid = attn.as_mask(mask, n, length)
    out = np.zeros((n, t_means.shape[1], s_means.shape[1]))
    for i in range(n):
        real = valid[i].to(torch.float32)
        out[i] = _row_kl_sums(_rows_over(t_means[i], real, eps), _rows_over(s_means[i], real, eps),
                              real) / max(float(real.sum()), 1.0)
    return np.maximum(out, 0.0).astype(np.float32)


def weighted_mean(per_sample: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The mean over samples of per-sample row divergences [N, ...], each weighted by its real query rows [N]: the
    divergence of all their rows together, as `metrics.attention.HeadDivergence` gives it."""
    weights = np.asarray(lengths, np.float64)
    total = weights.sum()
    if total <= 0:
        raise InputError("no real query rows: every sample is padding")
    return np.tensordot(weights, np.asarray(per_sample, np.float64), axes=1) / total
