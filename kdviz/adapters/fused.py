"""Attention probabilities for timm/ViT-style blocks whose fused attention (SDPA) returns no weights.

The block layout is timm's ``Attention``: a ``qkv`` Linear producing [B, N, 3·C], ``num_heads``, optional
``q_norm`` / ``k_norm`` and ``scale`` (default head_dim^-0.5). Two ways to get softmax(q kᵀ · scale) [B, H, N, N]:

- **eager switch** (blocks with timm's ``fused_attn`` flag and an ``attn_drop`` module): for the capture,
  ``fused_attn`` is set to False, so the block runs its own eager path, and a pre-hook on ``attn_drop`` records
  the probabilities it computed; the flag is restored afterwards. No extra work, like Hugging Face's eager switch.
- **qkv recompute** (any other block of this layout): a hook on ``qkv`` reuses the q and k the block computed and
  recomputes the probabilities; the model runs unchanged.

Masks and causal attention inside the block are not seen by the recompute, so this adapter is for encoders
(ViT/DeiT-style); use a model's own ``output_attentions`` where it has one.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from kdviz.adapters.family import AttentionTap, ModelFamily
from kdviz.errors import CaptureError


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


def can_switch_to_eager(block: nn.Module) -> bool:
    """timm blocks carry a ``fused_attn`` flag and run softmax → ``attn_drop`` when it is off."""
    return isinstance(getattr(block, "fused_attn", None), bool) and isinstance(getattr(block, "attn_drop", None), nn.Module)


class FusedAttentionHooks:
    """Records the attention probabilities of every given block during a forward pass (eager switch or recompute).

    ``source`` says which way was used: ``"timm-eager-switch"`` when every block could switch, else ``"fused-qkv-recompute"``.
    With ``keep_graph``, the eager path's probabilities are kept as computed (in the graph, not cast).
    Call `remove` to take the hooks off and restore the ``fused_attn`` flags.
    """

    def __init__(self, model: nn.Module, names: list[str], dtype: torch.dtype = torch.float16, keep_graph: bool = False) -> None:
        modules = dict(model.named_modules())
        self.names = names
        self.dtype = dtype
        self.keep_graph = keep_graph  # keep the eager path's probabilities in the autograd graph (attribution)
        self._maps: dict[str, torch.Tensor] = {}
        self._flags: list[tuple[nn.Module, bool]] = []
        self._handles = []
        blocks = [modules[n] for n in names]
        self.source = "timm-eager-switch" if all(can_switch_to_eager(b) for b in blocks) else "fused-qkv-recompute"
        for name, block in zip(names, blocks, strict=True):
            if self.source == "timm-eager-switch":
                self._flags.append((block, block.fused_attn))
                block.fused_attn = False
                self._handles.append(block.attn_drop.register_forward_pre_hook(self._record_probabilities(name)))
            else:
                self._handles.append(block.qkv.register_forward_hook(self._recompute_from_qkv(name, block)))

    def _record_probabilities(self, name: str):
        def hook(module: nn.Module, args) -> None:
            self._maps[name] = args[0] if self.keep_graph else args[0].detach().to(self.dtype)

        return hook

    def _recompute_from_qkv(self, name: str, block: nn.Module):
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
        for block, flag in self._flags:
            block.fused_attn = flag
        self._flags = []


class FusedAttention(ModelFamily):
    """Plain modules with timm/ViT-style attention blocks (a ``qkv`` Linear and ``num_heads``): attention
    probabilities by the eager switch or the qkv recompute of `FusedAttentionHooks`."""

    name = "fused-attention"

    def claims(self, model: nn.Module) -> bool:
        return bool(find_fused_attention(model))

    def tap_attentions(self, model: nn.Module, role: str, stack: contextlib.ExitStack, *, keep_graph: bool) -> AttentionTap:
        names = find_fused_attention(model)
        hooks = FusedAttentionHooks(model, names, keep_graph=keep_graph)
        stack.callback(hooks.remove)
        if keep_graph and hooks.source != "timm-eager-switch":
            raise CaptureError(
                f"the {role}'s attention blocks recompute their probabilities outside the model's graph (no fused_attn "
                "flag and attn_drop module), so gradients with respect to them cannot be taken; give the blocks timm's "
                "eager path or leave out attention_x_gradient"
            )
        return AttentionTap(hooks.source, names=names, collector=hooks)
