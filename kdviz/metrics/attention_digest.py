"""What capture keeps of attention maps for every sample, so that a run needs exact [H, T, T] maps for none of them:
per-head summaries, pooled thumbnails, and teacher–student divergences between heads and between layers.

A BERT-base pair at 512 tokens has 216 heads of 512 × 512: 113 MB of float16 per sample. Its digest is under
0.5 MB: [H, 5] summaries, [H, 32, 32] thumbnails, [L_t, L_s] layer divergences and [H_t, H_s] head divergences per
mapped layer pair. Every function takes one batch of one layer, [B, H, T, T], and returns per-sample rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
    for chosen, row, keep in _blocks(valid, heads):
        # a block padded at the end (or not at all) is summarised on its real [H, L, L] maps alone: the same values
        # (padded keys and queries carry no weight), at (L / T)² of the work, with no mask to apply
        m = maps[:, :, keep, keep][chosen].to(device="cpu", dtype=torch.float32)  # [G, H, L, L]
        prefix = keep != slice(None)
        out[chosen.numpy()] = _summary_block(m, row[keep], placed[keep], distance[keep, keep],
                                             lower[keep, keep] if causal else None, prefix).numpy()
    if not np.isfinite(out).all():
        raise InputError("attention contains NaN or inf; check the model and the inputs (the values must be finite)")
    return out


BLOCK_BYTES = 64 * 2**20  # float32 maps summarised at once (samples sharing a mask go through together)


def _blocks(valid: torch.Tensor, heads: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, slice]]:
    """Samples that share one mask row, in blocks of at most `BLOCK_BYTES` of float32 maps: (sample indices [G],
    the mask row [T], the tokens to keep: its first L when the padding is at the end, every token is then real; else
    ``slice(None)``, all of them, masked)."""
    rows, group = np.unique(valid.numpy(), axis=0, return_inverse=True)
    for g in range(len(rows)):
        members = torch.as_tensor(np.flatnonzero(group.reshape(-1) == g))
        row = valid[int(members[0])]
        length = _real_prefix(row)
        keep = slice(None) if length is None else slice(0, length)
        side = len(row) if length is None else length
        size = max(1, BLOCK_BYTES // (4 * heads * side * side))
        for first in range(0, len(members), size):
            yield members[first:first + size], row, keep


def _summary_block(m: torch.Tensor, valid: torch.Tensor, placed: torch.Tensor, distance: torch.Tensor,
                   lower: torch.Tensor | None, prefix: bool) -> torch.Tensor:
    """[G, H, S] summaries of G samples' maps [G, H, L, L] that share the mask row ``valid`` [L]; ``prefix``: the
    maps are a sample's real block (every key real); ``lower``: the causal mask [L, L] of a causal model, or None."""
    real = valid.to(torch.float32)
    rows = real.sum().clamp_min(1)

    def query_mean(values: torch.Tensor, weights: torch.Tensor = real, count: torch.Tensor = rows) -> torch.Tensor:
        return (values * weights).sum(-1) / count  # [G, H, L] -> [G, H]

    p = _rows_over(m, None if prefix else real)
    entropy = query_mean(torch.special.entr(p).sum(-1))
    located = (valid & placed).to(torch.float32)
    p_located = p if bool(placed.all()) else _rows_over(m, located)
    dist = query_mean(torch.einsum("ghqk,qk->ghq", p_located, distance), located, located.sum().clamp_min(1))
    first = query_mean(p[..., 0])
    diagonal = query_mean(torch.diagonal(p, dim1=-2, dim2=-1))
    share = torch.einsum("ghqk,q->ghk", p, real) / rows  # [G, H, L] share of each key over real queries
    allowed = real[:, None] * real[None, :] * (lower if lower is not None else 1.0)
    fair = (allowed / allowed.sum(-1, keepdim=True).clamp_min(1)).sum(0) / rows  # [L]
    ratio = torch.where(fair > 0, share / torch.where(fair > 0, fair, 1.0), 0.0).max(-1).values
    values = {"entropy": entropy, "distance": dist, "cls": first, "diagonal": diagonal, "sink": ratio}
    return torch.stack([values[name] for name in SUMMARY_NAMES], dim=-1)


def _rows_over(m: torch.Tensor, keys: torch.Tensor | None, eps: float = 0.0) -> torch.Tensor:
    """[..., T, T] rows restricted to the keys marked in ``keys`` [T] (None: every key; smoothed by ``eps``) and
    rescaled to sum 1. A new tensor: ``m`` is left as it is."""
    tiny = torch.finfo(m.dtype).tiny
    if keys is None and not eps:
        return m / m.sum(-1, keepdim=True).clamp_min(tiny)
    p = m + eps if eps else m * keys
    if eps and keys is not None:
        p.mul_(keys)
    return p.div_(p.sum(-1, keepdim=True).clamp_min(tiny))


def _real_prefix(valid: torch.Tensor) -> int | None:
    """L when the real tokens of a [T] mask are its first L (padding at the end), else None."""
    length = int(valid.sum())
    return length if length and bool(valid[:length].all()) else None


def _row_kl_sums(t: torch.Tensor, s: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """[..., A, B] Σ over real query rows of KL(t_a row ‖ s_b row), t [..., A, T, T] and s [..., B, T, T]
    (renormalised rows; leading dims: samples).

    Each row's sums over T keys are float32 (one batched product per query row); the sum over rows is float64."""
    self_term = torch.xlogy(t, t).sum(-1)  # [..., A, T]
    log_s = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))
    cross = torch.matmul(t.transpose(-3, -2), log_s.permute(*range(log_s.ndim - 3), -2, -1, -3))  # [..., T, A, B]
    per_row = (self_term.transpose(-1, -2)[..., None] - cross).to(torch.float64)
    return (per_row * rows.to(torch.float64)[:, None, None]).sum(-3).numpy()


def head_divergences(a_t: ArrayLike, a_s: ArrayLike, *, mask: ArrayLike | None = None, eps: float = attn.EPS) -> np.ndarray:
    """[N, H_t, H_s] float32 KL(teacher head ‖ student head) of each sample, the mean over its real query rows:
    `metrics.attention.per_sample_divergence` with float32 rows and float64 sums over rows, for capture."""
    t_maps, s_maps = attn.maps_view(a_t, "teacher attention"), attn.maps_view(a_s, "student attention")
    n, length = t_maps.shape[0], t_maps.shape[-1]
    valid = attn.as_mask(mask, n, length)
    out = np.zeros((n, t_maps.shape[1], s_maps.shape[1]))
    for chosen, row, keep in _blocks(valid, max(t_maps.shape[1], s_maps.shape[1])):
        real = row[keep].to(torch.float32)
        keys = None if keep != slice(None) else real  # padded at the end: the real blocks alone, as in the summaries
        t = _rows_over(t_maps[:, :, keep, keep][chosen].to(device="cpu", dtype=torch.float32), keys, eps)
        s = _rows_over(s_maps[:, :, keep, keep][chosen].to(device="cpu", dtype=torch.float32), keys, eps)
        out[chosen.numpy()] = _row_kl_sums(t, s, real) / max(float(real.sum()), 1.0)
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
