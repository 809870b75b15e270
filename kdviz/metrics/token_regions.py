"""Which tokens carry the corrective signal (issue 19): every token placed by the teacher's entropy H(p_t) and the
pair's divergence, split into four named regions, with each region's share of the tokens and of the divergence.

TIP-style analyses find that tokens where the teacher is confident and the student disagrees ("overconfident
wrong") are few and carry most of the signal; the shares here say whether that holds for a given run. The splits
default to the medians over the real tokens, so the regions are "the more confident half" and "the more divergent
half", and are stated wherever they are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kdviz.errors import InputError

# (confident: H(p_t) below the entropy split, disagreeing: divergence above the divergence split)
REGIONS = {
    (True, False): "confident, agreeing",
    (True, True): "confident, disagreeing",
    (False, False): "uncertain, agreeing",
    (False, True): "uncertain, disagreeing",
}


@dataclass(frozen=True)
class TokenRegions:
    """The four regions of one set of tokens: ``region`` [M] the index into `names` of each real token, the splits,
    and per region its share of the tokens and of the summed divergence."""

    names: list[str]
    region: np.ndarray
    entropy_split: float
    divergence_split: float
    token_share: dict[str, float]
    divergence_share: dict[str, float]


def real_tokens(values: Any, mask: Any | None) -> np.ndarray:
    """The values [M] of the real tokens of [N, T] per-token values (``mask`` [N, T] true where a token is real;
    non-finite values, such as the NaN of positions with no target, are left out too)."""
    array = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(array)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    return array[keep]


def token_regions(entropy: Any, divergence: Any, *, entropy_split: float | None = None,
                  divergence_split: float | None = None) -> TokenRegions:
    """Split tokens by the teacher's entropy [M] (nats) and a divergence [M] (nats, ≥ 0) of the same tokens.

    A token is confident when H(p_t) < ``entropy_split`` and disagreeing when divergence > ``divergence_split``
    (both default to the medians). Shares: of the M tokens, and of Σ divergence.
    """
    h, d = np.asarray(entropy, dtype=np.float64).ravel(), np.asarray(divergence, dtype=np.float64).ravel()
    if h.shape != d.shape:
        raise InputError(f"entropy and divergence must describe the same tokens: {h.shape} vs {d.shape}")
    if len(h) == 0:
        raise InputError("no tokens to place: the run has no real tokens with a divergence")
    if not (np.isfinite(h).all() and np.isfinite(d).all()):
        raise InputError("entropy and divergence must be finite; pass real tokens only (`real_tokens`)")
    h_split = float(np.median(h)) if entropy_split is None else float(entropy_split)
    d_split = float(np.median(d)) if divergence_split is None else float(divergence_split)
    names = list(REGIONS.values())
    confident, disagreeing = h < h_split, d > d_split
    region = np.empty(len(h), dtype=np.int64)
    for (c, g), name in REGIONS.items():
        region[(confident == c) & (disagreeing == g)] = names.index(name)
    total = float(d.sum())
    token_share = {name: float((region == i).mean()) for i, name in enumerate(names)}
    divergence_share = {name: (float(d[region == i].sum()) / total if total > 0 else 0.0) for i, name in enumerate(names)}
    return TokenRegions(names, region, h_split, d_split, token_share, divergence_share)
