"""Attention probabilities for timm/ViT-style blocks whose fused attention (SDPA) returns no weights.

The block layout is timm's ``Attention``: a ``qkv`` Linear producing [B, N, 3·C], ``num_heads``, optional
``q_norm`` / ``k_norm`` and ``scale`` (default head_dim^-0.5). A forward hook on ``qkv`` reuses the q and k the
block already computed and recomputes softmax(q kᵀ · scale) [B, H, N, N]; nothing in the model changes.
Masks and causal attention inside the block are not seen by the hook, so this adapter is for encoders
(ViT/DeiT-style); use a model's own ``output_attentions`` where it has one.
"""

from __future__ import annotations

import torch
from torch import nn


def find_fused_attention(model: nn.Module) -> list[str]:
    """Names of timm-style attention blocks (a ``qkv`` nn.Linear and an integer ``num_heads``), in model order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int)
    ]


def attention_from_qkv(block: nn.Module, qkv: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ · scale) for one block, from its qkv projection output [B, N, 3·C] -> [B, H, N, N]."""
    batch, tokens, _ = qkv.shape
    heads = block.num_heads
    q, k, _v = qkv.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    q = getattr(block, "q_norm", nn.Identity())(q)
    k = getattr(block, "k_norm", nn.Identity())(k)
    scale = getattr(block, "scale", q.shape[-1] ** -0.5)
    return torch.softmax((q.float() * scale) @ k.float().transpose(-2, -1), dim=-1)


class FusedAttentionHooks:
    """Records recomputed attention probabilities of every given fused block during a forward pass."""

    def __init__(self, model: nn.Module, names: list[str], dtype: torch.dtype = torch.float16) -> None:
        modules = dict(model.named_modules())
        self.names = names
        self.dtype = dtype
        self._maps: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].qkv.register_forward_hook(self._make_hook(n, modules[n])) for n in names]

    def _make_hook(self, name: str, block: nn.Module):
        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            self._maps[name] = attention_from_qkv(block, output.detach()).to(self.dtype)

        return hook

    def collect(self) -> list[torch.Tensor]:
        maps = [self._maps[n] for n in self.names if n in self._maps]
        self._maps = {}
        return maps

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
