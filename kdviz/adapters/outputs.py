"""Pull tensors out of whatever a model or a module returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kdviz.errors import CaptureError


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor in a module output: the tensor itself, or the first one in a tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, list | tuple) else ()
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


def extract_logits(output: Any, role: str) -> torch.Tensor:
    """Logits from a model output: a tensor, an object or dict with ``logits``, or the first tensor of a tuple."""
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None:
        logits = first_tensor(output)
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (2, 3):
        shape = None if not isinstance(logits, torch.Tensor) else tuple(logits.shape)
        raise CaptureError(
            f"the {role}'s output has no logits kdviz can read (found {type(output).__name__}, shape {shape}); "
            "the model must return logits [B, C] or [B, T, V], as a tensor, a tuple whose first item they are, or .logits"
        )
    return logits
