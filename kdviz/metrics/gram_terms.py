"""The terms HSIC needs from each layer's linear Gram K = X_c X_cᵀ, built for many layers of one batch at once, and
the HSIC of every layer pair from them (the engine under `features.MinibatchCKA`).

Precision (docs/architecture.md): features are column-centred in their own precision (float32, or float64 for
float64 input; half precision is raised to float32) before the product, so a large common offset costs no digits.
The Gram products are float32 matrix products; every sum after them (⟨K, L⟩ in chunks, the diagonals, the column
sums and the HSIC formula) is accumulated in float64.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError

F64 = torch.float64
CHUNK = 8192  # entries per float32 product of ⟨K, L⟩, summed in float64 (relative error ~1e-8 at n = 1,024)
MAX_BLOCKS = 4  # row blocks of the Gram: k blocks compute (k + 1) / (2k) of the full product
ROWS_PER_BLOCK = 128  # measured best at n = 256 and 512 (n = 1,024 takes MAX_BLOCKS either way)


def as_features(x: Any, what: str) -> torch.Tensor:
    """Features as a float tensor [n, d] (extra axes flattened per sample). Finiteness is checked on the Gram."""
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if tensor.ndim < 2:
        raise InputError(f"{what} must be [n, d] (or [n, ...], flattened per sample), got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().reshape(tensor.shape[0], -1)
    return tensor if tensor.is_floating_point() else tensor.double()


def check_finite_gram(diagonal: torch.Tensor, features: torch.Tensor, what: str) -> None:
    """A NaN or inf in any feature reaches the Gram's diagonal [n]; only then scan the rows to name the samples."""
    if not bool(torch.isfinite(diagonal).all()):
        rows = torch.nonzero(~torch.isfinite(features).all(dim=1)).flatten()[:5].tolist()
        if rows:
            raise InputError(f"{what} contain NaN or inf at sample index {rows}")
        raise InputError(f"{what} overflow the Gram product (values too large for {features.dtype}); pass float64 features")


@dataclass(frozen=True)
class BlockLayout:
    """The lower block triangle of an n × n Gram cut into k row blocks at ``edges`` (k + 1 row indices), flattened:
    the k diagonal blocks whole (entries [0, split)), then the blocks left of them (entries [split, size)), which
    stand for their mirror images too, so they count twice in ⟨K, L⟩."""

    n: int
    edges: tuple[int, ...]

    @classmethod
    def for_samples(cls, n: int, rows_per_block: int = ROWS_PER_BLOCK) -> BlockLayout:
        """About ``rows_per_block`` rows a block, at most `MAX_BLOCKS`: smaller blocks save products but run less
        efficiently."""
        k = max(1, min(MAX_BLOCKS, n // rows_per_block))
        return cls(n, tuple(round(i * n / k) for i in range(k + 1)))

    @property
    def split(self) -> int:
        return sum((b - a) ** 2 for a, b in itertools.pairwise(self.edges))

    @property
    def size(self) -> int:
        return self.split + sum((b - a) * a for a, b in itertools.pairwise(self.edges))

    def write(self, xc: torch.Tensor, out: torch.Tensor, diagonal: torch.Tensor) -> None:
        """Write the blocks of X_c X_cᵀ (xc [n, d]) into ``out`` [size] and its diagonal into ``diagonal`` [n]."""
        start = 0
        for a, b in itertools.pairwise(self.edges):
            block = out[start:start + (b - a) ** 2].view(b - a, b - a)
            torch.mm(xc[a:b], xc[a:b].T, out=block)
            diagonal[a:b].copy_(block.diagonal())
            start += (b - a) ** 2
        for a, b in itertools.pairwise(self.edges[1:]):
            torch.mm(xc[a:b], xc[:a].T, out=out[start:start + (b - a) * a].view(b - a, a))
            start += (b - a) * a


@dataclass
class GramTerms:
    """What the HSIC of one batch needs from each layer's Gram K = X_c X_cᵀ, one row per layer: ``blocks`` [L, P]
    the lower block triangle (`BlockLayout`, in the product's precision); ``diagonal`` [L, n] and ``sums`` [L, n]
    (K's column sums), both float64."""

    layout: BlockLayout
    blocks: torch.Tensor
    diagonal: torch.Tensor
    sums: torch.Tensor


class GramBuilder:
    """Builds `GramTerms` for batches of n samples, keeping its buffers from one layer and batch to the next
    (a buffer's first writes cost page faults, as much as the arithmetic on them)."""

    def __init__(self, rows_per_block: int = ROWS_PER_BLOCK) -> None:
        self.rows_per_block = rows_per_block
        self._terms: dict[tuple, GramTerms] = {}
        self._scratch: dict[tuple, torch.Tensor] = {}  # one centring buffer per dtype and device

    def terms(self, what: str, features: Sequence[Any], n: int) -> GramTerms:
        """`GramTerms` of every layer of ``features`` (each [n, ...], flattened per sample); ``what`` names them in
        errors and keys the buffers (terms of different ``what`` can be used together)."""
        flat = [as_features(f, f"{what} layer {i} features") for i, f in enumerate(features)]
        dtype = F64 if any(x.dtype == F64 for x in flat) else torch.float32
        device = flat[0].device
        layout = BlockLayout.for_samples(n, self.rows_per_block)
        key = (what, len(flat), n, dtype, str(device))
        if key not in self._terms:
            self._terms[key] = GramTerms(layout, torch.empty(len(flat), layout.size, dtype=dtype, device=device),
                                         torch.empty(len(flat), n, dtype=F64, device=device),
                                         torch.empty(len(flat), n, dtype=F64, device=device))
        terms = self._terms[key]
        for i, x in enumerate(flat):
            xc = self._centred(x.to(device), dtype)
            layout.write(xc, terms.blocks[i], terms.diagonal[i])
            check_finite_gram(terms.diagonal[i], x, f"{what} layer {i} features")
            terms.sums[i].copy_(xc @ xc.sum(0))  # K 1 = X_c (X_cᵀ 1), n·d work instead of a pass over K
        return terms

    def _centred(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x minus its column means, in ``dtype``, written into a reused buffer (grown to the widest layer seen)."""
        key = (dtype, str(x.device))
        buffer = self._scratch.get(key)
        if buffer is None or buffer.numel() < x.numel():
            buffer = self._scratch[key] = torch.empty(x.numel(), dtype=dtype, device=x.device)
        out = buffer[:x.numel()].view(x.shape)
        return torch.sub(x, x.mean(0, keepdim=True, dtype=dtype), out=out)


def gram_inner(a: GramTerms, b: GramTerms, *, paired: bool = False) -> torch.Tensor:
    """⟨K_i, L_j⟩ = Σ over all n² entries, for every layer i of ``a`` and j of ``b`` [L_a, L_b] (``paired``: of row i
    with row i, [L]), float64. Products of `CHUNK` entries in the blocks' precision, summed in float64."""
    out = torch.zeros((len(a.blocks),) if paired else (len(a.blocks), len(b.blocks)), dtype=F64, device=a.blocks.device)
    layout = a.layout
    for start, stop, weight in ((0, layout.split, 1.0), (layout.split, layout.size, 2.0)):
        for lo in range(start, stop, CHUNK):
            hi = min(stop, lo + CHUNK)
            x, y = a.blocks[:, lo:hi], b.blocks[:, lo:hi]
            if x.dtype != y.dtype:  # float32 features on one side, float64 on the other
                x, y = x.to(F64), y.to(F64)
            part = (x * y).sum(1) if paired else x @ y.T
            out.add_(part.to(F64), alpha=weight)
    return out


def hsic_from_terms(a: GramTerms, b: GramTerms, n: int, *, unbiased: bool, paired: bool = False) -> torch.Tensor:
    """HSIC of every layer of ``a`` with every layer of ``b`` [L_a, L_b] (``paired``: of row i with row i, [L]),
    from the raw Grams' terms, with no centred n × n matrix built.

    Unbiased (Song et al. 2012), with K̃ = K with its diagonal zeroed:
    [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)), the same value as ⟨U(K), U(L)⟩ / (n(n−3)).
    Biased: ⟨HKH, HLH⟩ / (n−1)² = [⟨K, L⟩ − 2/n · 1ᵀKL1 + 1ᵀK1 · 1ᵀL1 / n²] / (n−1)².
    """
    def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ip,ip->i", x, y) if paired else x @ y.T

    def outer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * y if paired else x[:, None] * y[None, :]

    inner = gram_inner(a, b, paired=paired)
    if unbiased:
        sums_a, sums_b = a.sums - a.diagonal, b.sums - b.diagonal  # column sums of K̃ and L̃
        off_diagonal = inner - dot(a.diagonal, b.diagonal)  # tr(K̃L̃): Σ over i ≠ j of K_ij L_ij
        return (off_diagonal + outer(sums_a.sum(1), sums_b.sum(1)) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * dot(sums_a, sums_b)) / (n * (n - 3))
    return (inner - 2 / n * dot(a.sums, b.sums) + outer(a.sums.sum(1), b.sums.sum(1)) / n**2) / (n - 1) ** 2
