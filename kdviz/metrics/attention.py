"""Attention metrics between teacher and student."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdviz.errors import InputError


def spatial_attention(feature_map: torch.Tensor, p: float = 2.0, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Attention-transfer map of CNN features [B, C, H, W] -> [B, H, W] (Zagoruyko & Komodakis).

    Q = mean_c |A_c|^p, then L2-normalised over the H·W positions. Using |A| keeps odd p correct (the common
    code's A^p without abs is wrong for odd p). ``size`` bilinearly resamples Q before normalising, so
    teacher and student maps of different sizes can be compared.
    """
    if feature_map.ndim != 4:
        raise InputError(f"spatial_attention expects conv features [B, C, H, W], got shape {tuple(feature_map.shape)}")
    if p <= 0:
        raise InputError(f"attention-transfer exponent p must be positive, got p={p}")
    q = feature_map.float().abs().pow(p).mean(dim=1)
    if size is not None and tuple(q.shape[-2:]) != tuple(size):
        q = F.interpolate(q.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    flat = q.reshape(q.shape[0], -1)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    return flat.reshape(q.shape)
