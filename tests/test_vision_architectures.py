"""Capture and attribution on the vision architectures distillation papers use, built from configs at small sizes
with random weights (nothing is downloaded): timm ViT and DeiT (two prefix tokens), torchvision ResNet and
MobileNet. What is stored is checked against the models' own outputs and an independent float64 recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kdviz

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

IMAGE = 32  # 32² images with 8² patches: a 4 × 4 grid of patch tokens


def vit(name: str, dim: int, depth: int, heads: int) -> torch.nn.Module:
    torch.manual_seed(depth)
    return timm.create_model(name, pretrained=False, img_size=IMAGE, patch_size=8, embed_dim=dim, depth=depth,
                             num_heads=heads, num_classes=5).eval()


def reference_attention(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """[B, H, T, T] softmax(q kᵀ / √d) of every block in float64, from each block's input and its own weights."""
    inputs: list[torch.Tensor] = []
    handles = [block.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach())) for block in model.blocks]
    with torch.no_grad():
        model(x)
        for handle in handles:
            handle.remove()
        return [_softmax_qk(block, tokens) for block, tokens in zip(model.blocks, inputs, strict=True)]


def _softmax_qk(block: torch.nn.Module, tokens: torch.Tensor) -> np.ndarray:
    attn = block.attn
    qkv = torch.nn.functional.linear(block.norm1(tokens).double(), attn.qkv.weight.double(), attn.qkv.bias.double())
    batch, length, _ = qkv.shape
    q, k, _ = qkv.reshape(batch, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1).numpy()


@pytest.mark.parametrize(("name", "prefix"), [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_timm_vision_transformers_give_their_own_logits_and_attention(name, prefix, tmp_path):
    teacher, student = vit(name, 48, 3, 4), vit(name, 24, 2, 2)
    x = torch.rand(6, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    run = kdviz.capture(teacher, student, x, path=tmp_path / "vit.kdviz", layers=["blocks.*"], progress=False, batch_size=4)
    with torch.no_grad():
        np.testing.assert_allclose(run.teacher.logits[:], teacher(x).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run.student.logits[:], student(x).numpy(), rtol=1e-5, atol=1e-5)
    assert run.teacher.description["attention_source"] == "timm-eager-switch"
    assert all(block.attn.fused_attn for block in teacher.blocks)  # timm's fused path is restored afterwards
    assert run.teacher.token_grid == {"prefix": prefix, "grid": [4, 4]}
    assert run.teacher.heads == [4, 4, 4] and run.student.heads == [2, 2]
    for layer, want in enumerate(reference_attention(teacher, x)):
        stored = run.teacher.attention(layer)[:].astype(np.float64)  # [6, 4, T, T], float16 on disk
        assert stored.shape == (6, 4, prefix + 16, prefix + 16)
        np.testing.assert_allclose(stored, want, atol=2e-3)
    assert run.layer_map == [(0, 1), (1, 2)]  # each student layer to the teacher layer at the same depth
    with torch.no_grad():  # the block outputs, pooled at capture: the token mean and the first (CLS) token
        hidden = teacher.blocks[0](teacher._pos_embed(teacher.patch_embed(x))).double()
    assert "blocks.0" in run.teacher.pooled_names
    np.testing.assert_allclose(run.teacher.features("blocks.0")[:], hidden.mean(1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run.teacher.summary_features("blocks.0")[:], hidden[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_torchvision_resnet_to_mobilenet_features_spatial_maps_and_grad_cam(tmp_path):
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    student = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5).eval()
    x = torch.rand(6, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    layers = {"teacher": ["layer1", "layer2", "layer3", "layer4"], "student": ["features.1", "features.3", "features.8", "features.12"]}
    run = kdviz.capture(teacher, student, x, path=tmp_path / "cnn.kdviz", layers=layers, progress=False, batch_size=4)
    with torch.no_grad():
        np.testing.assert_allclose(run.teacher.logits[:], teacher(x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(run.student.logits[:], student(x).numpy(), rtol=1e-4, atol=1e-5)
        stage = teacher.layer2(teacher.layer1(teacher.maxpool(teacher.relu(teacher.bn1(teacher.conv1(x))))))
    assert run.teacher.feature_names == layers["teacher"] and run.student.feature_names == layers["student"]
    np.testing.assert_allclose(run.teacher.features("layer2")[:], stage.numpy(), rtol=1e-4, atol=1e-5)
    # spatial attention (attention transfer, p = 2): Q = mean_c A², flattened, divided by its L2 norm, in float64
    q = (stage.double() ** 2).mean(1).reshape(6, -1).numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(run.teacher.spatial("layer2")[:].reshape(6, -1), q, rtol=1e-4, atol=1e-6)
    assert run.teacher.heads == [] and run.student.heads == []

    run = kdviz.attribute(teacher, student, x, run=run, methods=["grad_cam", "saliency"], progress=False, batch_size=4)
    cam = run.attribution("grad_cam")
    assert cam.attrs["layers"] == {"teacher": "layer4.1.conv2", "student": "features.12.0"}
    for role in ("teacher", "student"):
        maps = cam.maps(role)[:]
        assert maps.shape == (6, IMAGE, IMAGE) and np.isfinite(maps).all() and (maps >= 0).all()
    saliency = run.attribution("saliency").maps("student")[:]
    assert saliency.shape[0] == 6 and np.isfinite(saliency).all() and saliency.max() > 0
