"""Hugging Face ``transformers`` models: attentions via ``output_attentions``, which needs eager attention."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from kdviz.errors import CaptureError


def is_hf_model(model: nn.Module) -> bool:
    """True for a ``transformers.PreTrainedModel``, detected without importing transformers."""
    return any(cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers") for cls in type(model).__mro__)


def is_causal_lm(model: nn.Module) -> bool:
    """True for decoder language models, whose logits at position t predict token t + 1."""
    name = type(model).__name__
    return "CausalLM" in name or "LMHead" in name


def attention_implementation(model: nn.Module) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


@contextlib.contextmanager
def eager_attention(model: nn.Module, role: str) -> Iterator[str | None]:
    """Switch a model to eager attention for the capture, and back afterwards; yields the original one if switched.

    sdpa and flash attention compute the output without materialising the probabilities, so they return no
    attention weights (recent transformers return an empty tuple with a log warning). Eager attention gives the
    same outputs up to float rounding. The switch is undone on every exit path.
    """
    original = attention_implementation(model)
    if original == "eager":
        yield None
        return
    try:
        model.set_attn_implementation("eager")
    except Exception as exc:
        raise CaptureError(
            f"the {role} uses {original} attention, which returns no weights, and it could not be switched to eager ({exc}); "
            "load it with attn_implementation='eager' or pass attentions=False"
        ) from exc
    try:
        yield original
    finally:
        model.set_attn_implementation(original)


def layer_names(model: nn.Module, count: int) -> list[str]:
    """Dotted paths of the model's transformer blocks (the first ModuleList of ``count`` modules), for labels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return [f"{name}.{i}" for i in range(count)]
    return [f"layer.{i}" for i in range(count)]
