"""The fused-attention adapter: recomputed probabilities reproduce the block's own output."""

from __future__ import annotations

import numpy as np
import torch

import kdviz
from kdviz.adapters.fused import FusedAttentionHooks, attention_from_qkv, find_fused_attention
from kdviz.demo.models import DigitsViT


def test_recomputed_attention_reproduces_the_blocks_own_output():
    torch.manual_seed(0)
    model = DigitsViT(dim=32, depth=2, num_heads=4).eval()
    block = model.blocks[1].attn
    x = torch.randn(5, 17, 32)
    with torch.no_grad():
        own_output = block(x)  # computed with fused SDPA, which never exposes the weights
        qkv = block.qkv(x)
        probs = attention_from_qkv(block, qkv)
        v = qkv.reshape(5, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)[2]
        rebuilt = block.proj((probs @ v).transpose(1, 2).reshape(5, 17, 32))
    assert probs.shape == (5, 4, 17, 17)
    assert torch.allclose(probs.sum(-1), torch.ones(5, 4, 17), atol=1e-6)
    assert torch.allclose(rebuilt, own_output, atol=1e-5)


def test_adapter_finds_timm_style_blocks_and_removes_its_hooks():
    model = DigitsViT(dim=16, depth=3, num_heads=2)
    names = find_fused_attention(model)
    assert names == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    hooks = FusedAttentionHooks(model, names)
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8))
    assert [m.shape for m in hooks.collect()] == [torch.Size([2, 2, 17, 17])] * 3
    hooks.remove()
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_capture_of_a_vit_pair_stores_attention_that_sums_to_one(tmp_path):
    torch.manual_seed(0)
    teacher, student = DigitsViT(dim=32, depth=4, num_heads=4), DigitsViT(dim=16, depth=2, num_heads=2)
    x = torch.rand(6, 1, 8, 8)
    run = kdviz.capture(teacher, student, x, path=tmp_path / "vit.kdviz", layers=["blocks.*"], progress=False)
    assert run.teacher.description["attention_source"] == "timm-eager-switch"
    assert all(block.attn.fused_attn for block in teacher.blocks)  # the flag is restored after the capture
    assert run.teacher.attention(3).shape == (6, 4, 17, 17)
    rows = run.student.attention("blocks.1.attn")[:].astype(np.float64).sum(-1)
    np.testing.assert_allclose(rows, 1.0, atol=5e-3)  # float16 storage
    assert run.layer_map == [(0, 1), (1, 3)]


def test_eager_switch_and_recompute_give_the_same_probabilities_and_outputs(monkeypatch):
    torch.manual_seed(1)
    model = DigitsViT(dim=32, depth=2, num_heads=4).eval()
    x = torch.rand(3, 1, 8, 8)
    names = find_fused_attention(model)
    with torch.no_grad():
        fused_logits = model(x)
        switched = FusedAttentionHooks(model, names)
        assert switched.source == "timm-eager-switch" and not model.blocks[0].attn.fused_attn
        eager_logits = model(x)
        eager_maps = switched.collect()
        switched.remove()
        assert model.blocks[0].attn.fused_attn
        # blocks without timm's flag make the adapter fall back to recomputing from qkv
        monkeypatch.setattr("kdviz.adapters.fused.can_switch_to_eager", lambda block: False)
        recomputing = FusedAttentionHooks(model, names)
        assert recomputing.source == "fused-qkv-recompute"
        model(x)
        recomputed_maps = recomputing.collect()
        recomputing.remove()
    assert torch.allclose(eager_logits, fused_logits, atol=1e-5)  # the eager path is the same function
    for eager, recomputed in zip(eager_maps, recomputed_maps, strict=True):
        assert torch.allclose(eager.float(), recomputed.float(), atol=1e-3)  # both stored as float16
