"""Attention metrics between teacher and student: head divergence and matching, per-head summaries, rollout,
value relations and CNN attention transfer.

Conventions (docs/architecture.md): attention maps are row-stochastic probabilities [N, H, T, T] (query rows, key columns).
A padding ``mask`` [N, T] (1 = real token) removes padded queries from every average and padded keys from every
distribution (rows are renormalised over the real keys). Divergences are in nats, accumulated in float64. Maps
stored as float16 can hold exact zeros where the model gave ~1e-9, so distributions are smoothed by ``eps``
(added to every real key, then renormalised) before a logarithm is taken; with the default 1e-8 that moves no
value by more than a float16 step. Functions accept numpy arrays or torch tensors and return numpy arrays, except
`spatial_attention`, which runs inside capture on the models' device: torch in, torch out (float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from kdviz.errors import InputError

ArrayLike = Any  # numpy array or torch tensor
MEASURES = ("kl", "js")
EPS = 1e-8
CHUNK_ELEMENTS = 8_000_000  # float64 elements per working block (~64 MB)


# ---- input handling -------------------------------------------------------------------------------
def maps_view(a: ArrayLike, what: str = "attention") -> torch.Tensor:
    """[N, H, T, T] view of [N, H, T, T] or one sample's [H, T, T], shape-checked, in its own dtype (no copy)."""
    tensor = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[-1] != tensor.shape[-2]:
        raise InputError(f"{what} must be [N, heads, T, T] or [heads, T, T] with square maps, got shape {tuple(tensor.shape)}")
    return tensor.detach()


def as_maps(a: ArrayLike, what: str = "attention") -> torch.Tensor:
    """[N, H, T, T] float64 from [N, H, T, T] or one sample's [H, T, T], checked finite."""
    tensor = maps_view(a, what).to(device="cpu", dtype=torch.float64)
    _check_finite(tensor, what)
    return tensor


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    # one reduction: NaN and inf survive a sum (finite float64 attention values cannot overflow it)
    if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{what} contains NaN or inf; check the model and the inputs (the values must be finite)")


def as_mask(mask: ArrayLike | None, n: int, t: int) -> torch.Tensor:
    """[N, T] bool padding mask (True = real token); all True when ``mask`` is None."""
    if mask is None:
        return torch.ones(n, t, dtype=torch.bool)
    tensor = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tuple(tensor.shape) != (n, t):
        raise InputError(f"mask must be [N, T] = [{n}, {t}] to match the attention maps, got {tuple(tensor.shape)}")
    return tensor.to("cpu").bool()


def _check_pair(a_t: torch.Tensor, a_s: torch.Tensor) -> None:
    if a_t.shape[0] != a_s.shape[0] or a_t.shape[-1] != a_s.shape[-1]:
        raise InputError(
            f"teacher attention {tuple(a_t.shape)} and student attention {tuple(a_s.shape)} must cover the same samples "
            "and the same tokens ([N, H, T, T] with equal N and T; head counts may differ)"
        )


def renormalise(a: torch.Tensor, key_mask: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Zero padded keys of [N, H, T, T] (``key_mask`` [N, T]), add ``eps`` to real keys and rescale rows to sum 1."""
    keys = key_mask[:, None, None, :].to(a.dtype)
    a = (a + eps) * keys
    return a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def sample_blocks(n: int, per_sample: int) -> list[slice]:
    """Slices of ``n`` samples, each holding about `CHUNK_ELEMENTS` working values (``per_sample`` per sample)."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_sample))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


# ---- divergence between heads ---------------------------------------------------------------------
@dataclass
class HeadDivergence:
    """Streaming teacher-heads × student-heads row divergence: feed sample chunks with `update`, read `result`.

    Entry [h, g] is the mean, over every real query row of every sample seen, of D(teacher head h row ‖ student
    head g row); D is KL (teacher first, as in MiniLM) or the Jensen-Shannon divergence.
    """

    measure: str = "kl"
    eps: float = EPS
    total: np.ndarray | None = None
    rows: int = 0

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise InputError(f"unknown attention divergence {self.measure!r}; choose one of {MEASURES}")

    def update(self, a_t: ArrayLike, a_s: ArrayLike, mask: ArrayLike | None = None) -> None:
        t, s = maps_view(a_t, "teacher attention"), maps_view(a_s, "student attention")
        _check_pair(t, s)
        valid = as_mask(mask, t.shape[0], t.shape[-1])
        sums = np.zeros((t.shape[1], s.shape[1]))
        per_sample = (t.shape[1] + s.shape[1]) * t.shape[-1] ** 2
        for block in sample_blocks(t.shape[0], per_sample):  # float64 copies of one block at a time
            sums += _divergence_sums(as_maps(t[block], "teacher attention"), as_maps(s[block], "student attention"),
                                     valid[block], self.measure, self.eps).sum(0)
        self.total = sums if self.total is None else self.total + sums
        self.rows += int(valid.sum())

    def result(self) -> np.ndarray:
        """[H_t, H_s] mean row divergence in nats."""
        if self.total is None or self.rows == 0:
            raise InputError("no attention rows were added (every query was padding, or update was never called)")
        mean = self.total / self.rows
        return np.maximum(mean, 0.0) if self.measure == "kl" else mean  # KL ≥ 0; the difference of sums can round to -1e-16


def _divergence_sums(t: torch.Tensor, s: torch.Tensor, valid: torch.Tensor, measure: str, eps: float) -> np.ndarray:
    """Σ over each sample's real query rows of the row divergence, for every (teacher head, student head) pair:
    [N, H_t, H_s]."""
    t, s = renormalise(t, valid, eps), renormalise(s, valid, eps)
    rows = valid[:, None, :, None].to(t.dtype)  # weights for query rows; padded keys are already 0 in both
    n, heads_t, heads_s = t.shape[0], t.shape[1], s.shape[1]
    if measure == "kl":
        # KL(t‖s) = Σ t log t − Σ t log s; the cross term for every head pair is one matrix product per sample.
        t_rows = (t * rows).reshape(n, heads_t, -1)
        self_term = torch.xlogy(t_rows, t_rows).sum(-1)
        log_s = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny)).reshape(n, heads_s, -1)
        cross = t_rows @ log_s.transpose(1, 2)
        return (self_term[:, :, None] - cross).numpy()
    out = np.zeros((n, heads_t, heads_s))
    for h in range(heads_t):
        p = t[:, h : h + 1]
        m = 0.5 * (p + s)  # [n, H_s, T, T]
        js = 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)) + 0.5 * (torch.xlogy(s, s) - torch.xlogy(s, m))
        out[:, h] = (js.sum(-1) * rows[..., 0]).sum(2).numpy()
    return out


def per_sample_divergence(a_t: ArrayLike, a_s: ArrayLike, *, mask: ArrayLike | None = None, measure: str = "kl",
                          eps: float = EPS) -> np.ndarray:
    """[N, H_t, H_s] `head_divergence` of each sample alone: its mean row divergence over its real query rows.
    Weighting sample n by its real rows (``mask[n].sum()``) and averaging gives `head_divergence` of them all."""
    if measure not in MEASURES:
        raise InputError(f"unknown attention divergence {measure!r}; choose one of {MEASURES}")
    t, s = maps_view(a_t, "teacher attention"), maps_view(a_s, "student attention")
    _check_pair(t, s)
    valid = as_mask(mask, t.shape[0], t.shape[-1])
    out = np.zeros((t.shape[0], t.shape[1], s.shape[1]))
    for block in sample_blocks(t.shape[0], (t.shape[1] + s.shape[1]) * t.shape[-1] ** 2):
        out[block] = _divergence_sums(as_maps(t[block], "teacher attention"), as_maps(s[block], "student attention"),
                                      valid[block], measure, eps)
    out /= np.maximum(valid.sum(1).numpy(), 1)[:, None, None]
    return np.maximum(out, 0.0) if measure == "kl" else out


def head_divergence(a_t: ArrayLike, a_s: ArrayLike, *, mask: ArrayLike | None = None, measure: str = "kl",
                    eps: float = EPS) -> np.ndarray:
    """[H_t, H_s] mean per-query divergence between every teacher head and every student head of a layer pair.

    ``a_t`` [N, H_t, T, T] and ``a_s`` [N, H_s, T, T] (or one sample's [H, T, T]); the head counts may differ.
    ``measure``: ``"kl"`` = KL(teacher ‖ student) row by row (MiniLM's attention loss, per head pair) or ``"js"``.
    """
    accumulator = HeadDivergence(measure, eps)
    accumulator.update(a_t, a_s, mask)
    return accumulator.result()


def attention_kl(a_t: torch.Tensor, a_s: torch.Tensor, mask: torch.Tensor | None = None, eps: float = EPS) -> torch.Tensor:
    """MiniLM's attention loss: KL(teacher row ‖ student row) of head h with head h, averaged over heads and real
    query rows. Torch in, a scalar out, differentiable and in the input's dtype (the `kdviz.losses.AttentionKL`
    formula; `head_divergence` gives the same values per head pair, in float64, for the views).

    ``a_t``, ``a_s`` [N, H, T, T] with equal head counts; ``mask`` [N, T] (1 = real token); rows are restricted to
    real keys and smoothed by ``eps`` as everywhere in this module.
    """
    if a_t.shape != a_s.shape:
        raise InputError(f"attention_kl pairs head h with head h, so the maps must have one shape; got {tuple(a_t.shape)} and "
                         f"{tuple(a_s.shape)} (for different head counts, compare with head_divergence)")
    valid = torch.ones(a_t.shape[0], a_t.shape[-1], dtype=torch.bool, device=a_t.device) if mask is None else mask.bool()
    t, s = renormalise(a_t, valid, eps), renormalise(a_s, valid, eps)
    rows = torch.xlogy(t, t).sum(-1) - (t * torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))).sum(-1)  # [N, H, T]
    weights = valid[:, None, :].to(rows.dtype).expand_as(rows)
    return (rows * weights).sum() / weights.sum().clamp_min(1)


@dataclass
class HeadMatch:
    """A one-to-one assignment of student heads to teacher heads (minimum total divergence)."""

    pairs: list[tuple[int, int]]  # (teacher head, student head)
    costs: list[float]  # divergence of each pair
    unmatched_teacher: list[int] = field(default_factory=list)
    unmatched_student: list[int] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(sum(self.costs))

    def teacher_of(self, student_head: int) -> int | None:
        return next((t for t, s in self.pairs if s == student_head), None)

    def student_of(self, teacher_head: int) -> int | None:
        return next((s for t, s in self.pairs if t == teacher_head), None)


def match_heads(divergence: ArrayLike) -> HeadMatch:
    """Hungarian matching on a [H_t, H_s] divergence matrix (`head_divergence`): min(H_t, H_s) pairs with the lowest
    total divergence; heads left over on the larger side are reported as unmatched."""
    cost = np.asarray(divergence, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise InputError(f"match_heads expects a non-empty [teacher heads, student heads] matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise InputError("the divergence matrix contains NaN or inf; compute it with eps > 0 (see head_divergence)")
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
    return HeadMatch(pairs, [float(cost[r, c]) for r, c in pairs],
                     sorted(set(range(cost.shape[0])) - set(rows.tolist())), sorted(set(range(cost.shape[1])) - set(cols.tolist())))


def layer_divergence(teacher_layers: Sequence[ArrayLike], student_layers: Sequence[ArrayLike], *,
                     mask: ArrayLike | None = None, measure: str = "kl", eps: float = EPS) -> np.ndarray:
    """[L_t, L_s] divergence between the head-averaged attention of every teacher and every student layer.

    Each layer is [N, H, T, T]; the heads are averaged first, so layers with different head counts compare.
    Low values mark layer pairs whose attention agrees, which is what a layer map should pair.
    """
    return LayerDivergence(len(teacher_layers), len(student_layers), measure, eps).update(
        teacher_layers, student_layers, mask).result()


class LayerDivergence:
    """Streaming version of `layer_divergence`: `update` with chunks of samples of every layer, then `result`."""

    def __init__(self, n_teacher: int, n_student: int, measure: str = "kl", eps: float = EPS) -> None:
        self.cells = [[HeadDivergence(measure, eps) for _ in range(n_student)] for _ in range(n_teacher)]

    def update(self, teacher_layers: Sequence[ArrayLike], student_layers: Sequence[ArrayLike],
               mask: ArrayLike | None = None) -> LayerDivergence:
        if len(teacher_layers) != len(self.cells) or len(student_layers) != len(self.cells[0]):
            raise InputError(f"expected {len(self.cells)} teacher and {len(self.cells[0])} student layers, "
                             f"got {len(teacher_layers)} and {len(student_layers)}")
        t_means = [as_maps(a, "teacher attention").mean(1, keepdim=True) for a in teacher_layers]
        s_means = [as_maps(a, "student attention").mean(1, keepdim=True) for a in student_layers]
        for i, t in enumerate(t_means):
            for j, s in enumerate(s_means):
                self.cells[i][j].update(t, s, mask)
        return self

    def result(self) -> np.ndarray:
        return np.array([[cell.result()[0, 0] for cell in row] for row in self.cells])


# ---- per-head summaries ---------------------------------------------------------------------------
def _query_mean(values: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """Mean of per-row values [N, H, T] over real query rows -> [H]."""
    weights = valid[:, None, :].to(values.dtype)
    return ((values * weights).sum((0, 2)) / weights.sum((0, 2)).clamp_min(1)).numpy()


def attention_entropy(a: ArrayLike, *, mask: ArrayLike | None = None) -> np.ndarray:
    """[H] mean entropy (nats) of each head's query rows. Low: focused heads; log(T): uniform attention."""
    maps = as_maps(a)
    valid = as_mask(mask, maps.shape[0], maps.shape[-1])
    p = renormalise(maps, valid)
    return _query_mean(-torch.xlogy(p, p).sum(-1), valid)


def token_positions(n_tokens: int, grid: Sequence[int] | None = None, prefix: int = 0) -> np.ndarray:
    """[T, d] coordinates for attention distance: token index for text (d = 1), (row, column) of each patch for a
    ViT (``grid`` = (rows, columns) after ``prefix`` CLS/register tokens, d = 2). Prefix tokens get NaN."""
    positions = np.full((n_tokens, 2 if grid else 1), np.nan)
    if grid is None:
        positions[prefix:, 0] = np.arange(n_tokens - prefix)
        return positions
    rows, cols = int(grid[0]), int(grid[1])
    if prefix + rows * cols != n_tokens:
        raise InputError(f"a {rows}×{cols} patch grid plus {prefix} prefix tokens is {prefix + rows * cols} tokens, "
                         f"but the attention maps have {n_tokens}")
    r, c = np.divmod(np.arange(rows * cols), cols)
    positions[prefix:] = np.stack([r, c], axis=1)
    return positions


def attention_distance(a: ArrayLike, positions: ArrayLike | None = None, *, mask: ArrayLike | None = None) -> np.ndarray:
    """[H] mean attention distance: Σ_k a[q, k]·‖pos_q − pos_k‖ averaged over real queries (Dosovitskiy et al.).

    ``positions`` [T, d] from `token_positions` (default: token index). Tokens with NaN positions (CLS, registers)
    are left out as queries and as keys, and each row is renormalised over the remaining keys, so the result is
    the distance in tokens (text) or patches (ViT) among positioned tokens.
    """
    maps = as_maps(a)
    t = maps.shape[-1]
    pos = torch.as_tensor(np.asarray(positions if positions is not None else token_positions(t), dtype=np.float64))
    if pos.ndim == 1:
        pos = pos[:, None]
    if pos.shape[0] != t:
        raise InputError(f"positions has {pos.shape[0]} rows but the attention maps have {t} tokens")
    placed = ~torch.isnan(pos).any(1)
    valid = as_mask(mask, maps.shape[0], t) & placed[None, :]
    distance = torch.cdist(torch.nan_to_num(pos), torch.nan_to_num(pos))
    p = renormalise(maps, valid)
    return _query_mean((p * distance).sum(-1), valid)


def key_share(a: ArrayLike, *, mask: ArrayLike | None = None) -> np.ndarray:
    """[H, T] share of each head's attention that lands on each key position (mean over real queries; sums to 1)."""
    maps = as_maps(a)
    valid = as_mask(mask, maps.shape[0], maps.shape[-1])
    p = renormalise(maps, valid) * valid[:, None, :, None]
    return (p.sum((0, 2)) / valid.sum().clamp_min(1)).numpy()


def is_causal(a: ArrayLike, tol: float = 1e-6) -> bool:
    """True when no query attends to a later key (a decoder's causal mask)."""
    maps = as_maps(a)
    upper = torch.triu(torch.ones(maps.shape[-1], maps.shape[-1], dtype=torch.bool), diagonal=1)
    return maps.shape[-1] > 1 and float(maps[..., upper].abs().max()) <= tol


def fair_share(n: int, t: int, *, mask: ArrayLike | None = None, causal: bool = False) -> np.ndarray:
    """[T] the share each key would get if every query attended uniformly to the keys it can see."""
    valid = as_mask(mask, n, t).to(torch.float64)
    lower = torch.tril(torch.ones(t, t, dtype=torch.float64)) if causal else torch.ones(t, t, dtype=torch.float64)
    total = torch.zeros(t, dtype=torch.float64)
    for block in sample_blocks(n, t * t):
        allowed = valid[block, None, :] * valid[block, :, None] * lower  # [n, q, k]
        total += (allowed / allowed.sum(-1, keepdim=True).clamp_min(1)).sum((0, 1))
    return (total / valid.sum().clamp_min(1)).numpy()


def attention_sinks(a: ArrayLike, *, mask: ArrayLike | None = None, ratio: float = 4.0,
                    causal: bool | None = None) -> dict[str, np.ndarray]:
    """Keys that receive far more attention than their share: ``share`` [H, T] (`key_share`), ``fair`` [T]
    (`fair_share`; causal heads see early keys more often), ``ratio`` [H, T] = share / fair, and ``sinks`` [H, T]
    True where the ratio is at least ``ratio`` (BOS / CLS / punctuation sinks)."""
    maps = as_maps(a)
    causal = is_causal(maps) if causal is None else causal
    share = key_share(maps, mask=mask)
    fair = fair_share(maps.shape[0], maps.shape[-1], mask=mask, causal=causal)
    with np.errstate(divide="ignore", invalid="ignore"):
        over = np.where(fair > 0, share / np.where(fair > 0, fair, 1.0), 0.0)
    return {"share": share, "fair": fair, "ratio": over, "sinks": over >= ratio}


def cls_share(a: ArrayLike, *, index: int = 0, mask: ArrayLike | None = None) -> np.ndarray:
    """[H] mean share of attention on token ``index`` (the CLS token of BERT or a ViT; for causal LMs the first
    token, a common sink)."""
    return key_share(a, mask=mask)[:, index]


def diagonal_share(a: ArrayLike, *, mask: ArrayLike | None = None) -> np.ndarray:
    """[H] mean attention of a query to itself."""
    maps = as_maps(a)
    valid = as_mask(mask, maps.shape[0], maps.shape[-1])
    p = renormalise(maps, valid)
    return _query_mean(torch.diagonal(p, dim1=-2, dim2=-1), valid)


SUMMARIES = {
    "entropy": "entropy (nats)",
    "distance": "mean attention distance",
    "cls": "share on CLS / first token",
    "diagonal": "share on itself",
    "sink": "largest sink ratio",
}


def head_summaries(a: ArrayLike, *, mask: ArrayLike | None = None, positions: ArrayLike | None = None,
                   cls_index: int = 0, which: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per-head summaries of one layer [N, H, T, T] as [H] arrays, keyed as `SUMMARIES` (all, or those in ``which``)."""
    which = list(SUMMARIES) if which is None else list(which)
    unknown = [key for key in which if key not in SUMMARIES]
    if unknown:
        raise InputError(f"unknown head summaries {unknown}; choose from {list(SUMMARIES)}")
    maps = as_maps(a)
    compute = {
        "entropy": lambda: attention_entropy(maps, mask=mask),
        "distance": lambda: attention_distance(maps, positions, mask=mask),
        "cls": lambda: cls_share(maps, index=cls_index, mask=mask),
        "diagonal": lambda: diagonal_share(maps, mask=mask),
        "sink": lambda: attention_sinks(maps, mask=mask)["ratio"].max(1),
    }
    return {key: compute[key]() for key in which}


# ---- rollout, relations, attention transfer --------------------------------------------------------
def rollout(layers: Sequence[ArrayLike], *, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema) [N, T, T]: R = Â_L ⋯ Â_1 with Â = (1 − r)·mean_heads(A) + r·I,
    rows renormalised. Row q of R is how much of the input tokens flows into position q at the last layer."""
    if not layers:
        raise InputError("rollout needs at least one attention layer")
    if not 0.0 <= residual <= 1.0:
        raise InputError(f"residual must be in [0, 1], got {residual}")
    result = None
    for index, layer in enumerate(layers):
        maps = as_maps(layer, f"attention layer {index}").mean(1)
        if result is not None and maps.shape != result.shape:
            raise InputError(f"attention layer {index} has shape {tuple(maps.shape)}, earlier layers {tuple(result.shape)}")
        step = (1.0 - residual) * maps + residual * torch.eye(maps.shape[-1], dtype=maps.dtype)
        step = step / step.sum(-1, keepdim=True).clamp_min(torch.finfo(step.dtype).tiny)
        result = step if result is None else step @ result
    return result.numpy()


def value_relation(values: ArrayLike, heads: int | None = None) -> np.ndarray:
    """MiniLM value relation softmax(V Vᵀ / √d) per head: [N, H, T, T] from values [N, H, T, d] or from a value
    projection's output [N, T, H·d] (captured as a feature, e.g. ``encoder.layer.*.attention.self.value``) split
    into ``heads``. Compare teacher and student relations with `head_divergence`."""
    v = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    v = v.detach().to("cpu", torch.float64)
    if v.ndim == 3:
        if heads is None or heads <= 0 or v.shape[-1] % heads:
            raise InputError(f"values [N, T, {v.shape[-1]}] need heads= that divides {v.shape[-1]}, got heads={heads}")
        v = v.reshape(v.shape[0], v.shape[1], heads, -1).transpose(1, 2)
    if v.ndim != 4:
        raise InputError(f"values must be [N, H, T, d] or [N, T, H·d], got shape {tuple(v.shape)}")
    _check_finite(v, "values")
    return torch.softmax(v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1]), dim=-1).numpy()


def spatial_attention(feature_map: ArrayLike, p: float = 2.0, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Attention-transfer map of CNN features [B, C, H, W] -> [B, H, W] float32 tensor (Zagoruyko & Komodakis).

    Q = mean_c |A_c|^p, then L2-normalised over the H·W positions. Using |A| keeps odd p correct (the common
    code's A^p without abs is wrong for odd p). ``size`` bilinearly resamples Q before normalising, so
    teacher and student maps of different sizes can be compared. Takes a tensor (gradients flow, as the
    attention-transfer loss needs) or a numpy array.
    """
    if not isinstance(feature_map, torch.Tensor):
        feature_map = torch.as_tensor(np.asarray(feature_map))
    if feature_map.ndim != 4:
        raise InputError(f"spatial_attention expects conv features [B, C, H, W], got shape {tuple(feature_map.shape)}")
    if p <= 0:
        raise InputError(f"attention-transfer exponent p must be positive, got p={p}")
    _check_finite(feature_map, "conv features")
    q = feature_map.float().abs().pow(p).mean(dim=1)
    return _normalise_maps(_resample(q, size))


def _resample(q: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    if size is not None and tuple(q.shape[-2:]) != tuple(size):
        q = F.interpolate(q.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    return q


def _normalise_maps(q: torch.Tensor) -> torch.Tensor:
    flat = q.reshape(q.shape[0], -1)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    return flat.reshape(q.shape)


def match_spatial_size(q_t: ArrayLike, q_s: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student attention-transfer maps [N, h, w] brought to the larger of the two sizes (bilinear) and
    L2-normalised again, as float64. Resampling a normalised map and renormalising equals resampling Q itself."""
    t = torch.as_tensor(np.asarray(q_t), dtype=torch.float64)
    s = torch.as_tensor(np.asarray(q_s), dtype=torch.float64)
    if t.ndim == 2:
        t, s = t.unsqueeze(0), s.unsqueeze(0)
    if t.ndim != 3 or s.ndim != 3 or t.shape[0] != s.shape[0]:
        raise InputError(f"attention-transfer maps must be [N, h, w] for the same N, got {tuple(t.shape)} and {tuple(s.shape)}")
    _check_finite(t, "teacher attention-transfer maps")
    _check_finite(s, "student attention-transfer maps")
    size = (max(t.shape[1], s.shape[1]), max(t.shape[2], s.shape[2]))
    return _normalise_maps(_resample(t, size)), _normalise_maps(_resample(s, size))


def at_distance(q_t: ArrayLike, q_s: ArrayLike) -> np.ndarray:
    """[N] attention-transfer distance ‖Q_s/‖Q_s‖ − Q_t/‖Q_t‖‖₂ per sample, after `match_spatial_size`.
    0 for identical maps; at most √2 (the maps are non-negative unit vectors)."""
    t, s = match_spatial_size(q_t, q_s)
    return (s - t).reshape(s.shape[0], -1).norm(dim=1).numpy()
