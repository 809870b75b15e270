"""The Universal Logit Distillation distance (Boizard et al. 2024), which compares two next-token distributions
over different vocabularies without matching their entries: each probability vector is sorted in decreasing order,
the shorter is padded with zeros, and the distance is the L1 norm of the difference,

    ULD(p_t, p_s) = Σ_i |p_t↓(i) − p_s↓(i)|,   in [0, 2].

It is the closed form of the Wasserstein-1 distance when every sorted rank is one unit from the next. It ignores
which token holds which probability, so any relabelling of either vocabulary leaves it unchanged: it measures the
shape of the distribution (how peaked, how long a tail), not its content."""

from __future__ import annotations

import torch


def sorted_probabilities(z: torch.Tensor, T: float = 1.0, width: int | None = None) -> torch.Tensor:
    """softmax(z / T) of rows [M, V], sorted in decreasing order and zero-padded on the right to ``width`` columns
    ([M, max(V, width)]); computed in z's dtype, float32 at least."""
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    p = torch.softmax(z / T, dim=-1)
    p = torch.sort(p, dim=-1, descending=True).values
    if width is not None and width > p.shape[-1]:
        p = torch.nn.functional.pad(p, (0, width - p.shape[-1]))
    return p


def uld_distance(z_t: torch.Tensor, z_s: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """ULD between aligned rows of teacher logits [M, V_t] and student logits [M, V_s] (V_t ≠ V_s allowed): [M]."""
    if z_t.ndim != 2 or z_s.ndim != 2 or z_t.shape[0] != z_s.shape[0]:
        raise ValueError(f"uld_distance takes aligned rows [M, V_t] and [M, V_s], got {tuple(z_t.shape)} and {tuple(z_s.shape)}")
    width = max(z_t.shape[-1], z_s.shape[-1])
    p_t, p_s = sorted_probabilities(z_t, T, width), sorted_probabilities(z_s, T, width)
    return (p_t - p_s.to(p_t.dtype)).abs().sum(-1)
