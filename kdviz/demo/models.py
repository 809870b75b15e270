"""The demo model families: a digits CNN, a digits ViT with fused (SDPA) attention, and a GPT-2 character LM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class DigitsCNN(nn.Module):
    """A small CNN for 8×8 digits [B, 1, 8, 8] -> logits [B, 10]; ``layer1..3`` are the feature stages."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 64), n_classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.layer1 = nn.Sequential(nn.Conv2d(1, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(w1, w2, 3, padding=1), nn.BatchNorm2d(w2), nn.ReLU(), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(nn.Conv2d(w2, w3, 3, padding=1), nn.BatchNorm2d(w3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(x))))


class Attention(nn.Module):
    """Multi-head self-attention in timm's layout: fused SDPA by default (no attention weights come out), and
    the eager path (softmax, then ``attn_drop``) when ``fused_attn`` is False, as in timm."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            out = self.attn_drop(attn.softmax(dim=-1)) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsViT(nn.Module):
    """A ViT for 8×8 digits: 2×2 patches -> 16 tokens + CLS; ``blocks.i`` are the layers."""

    def __init__(self, dim: int = 64, depth: int = 4, num_heads: int = 4, patch: int = 2, image: int = 8, n_classes: int = 10) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        n_patches = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, 0]))


def char_lm(vocab_size: int, n_layer: int, n_head: int, n_embd: int, n_positions: int = 64) -> nn.Module:
    """A GPT-2 character language model built from a config (Hugging Face transformers, no download)."""
    from kdviz.demo.optional import require_transformers

    transformers = require_transformers("the character-LM demo")
    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config)


def build(kind: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate a demo model from its kind and keyword arguments (as recorded in assets/demo.json)."""
    factories = {
        "cnn": lambda: DigitsCNN(tuple(kwargs["widths"])),
        "vit": lambda: DigitsViT(**kwargs),
        "char_lm": lambda: char_lm(**kwargs),
    }
    return factories[kind]()
