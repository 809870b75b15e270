"""Softmax at temperature T and the input checks that every logit measure shares (`metrics.logits`,
`metrics.calibration`): logits become float64 tensors, and NaN, inf or mismatched shapes are refused by name."""

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


def probabilities(z: ArrayLike, T: float = 1.0) -> np.ndarray:
    """softmax(z / T) over the last axis as a float64 numpy array (from `log_probs`, so it never overflows)."""
    tensor = _as_tensor(z)
    return log_probs(tensor, T).exp().numpy()
