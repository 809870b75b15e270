"""Where the tokens of a vision transformer sit on the image: the patch grid and the CLS/register prefix.

Views draw a ViT query's attention over the input image with it; attention distance is measured in patches.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def token_grid(model: nn.Module, n_tokens: int, input_shape: tuple[int, ...] | None = None) -> dict[str, Any] | None:
    """``{"prefix": P, "grid": [rows, cols]}`` when the model's T tokens are P prefix tokens and a patch grid.

    Looked up, in order: timm's ``patch_embed.grid_size`` and ``num_prefix_tokens``; a ``grid_size`` attribute on
    the model; a Hugging Face vision config (``image_size`` / ``patch_size``); finally, for image inputs
    [B, C, H, W], a square grid with one CLS token or none. Returns None for text models.
    """
    candidates = [getattr(getattr(model, "patch_embed", None), "grid_size", None), getattr(model, "grid_size", None),
                  _hf_grid(model)]
    for grid in candidates:
        if grid is not None:
            rows, cols = (int(grid), int(grid)) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
            prefix = n_tokens - rows * cols
            if 0 <= prefix <= 16:
                return {"prefix": prefix, "grid": [rows, cols]}
    if input_shape is not None and len(input_shape) == 4:
        for prefix in (1, 0):
            side = math.isqrt(max(0, n_tokens - prefix))
            if side > 1 and side * side == n_tokens - prefix:
                return {"prefix": prefix, "grid": [side, side]}
    return None


def _hf_grid(model: nn.Module) -> tuple[int, int] | None:
    config = getattr(model, "config", None)
    image, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if image is None or patch is None:
        return None
    image = (image, image) if isinstance(image, int) else tuple(image)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return image[0] // patch[0], image[1] // patch[1]
