"""Hugging Face ``transformers`` models: attentions via ``output_attentions``, which needs eager attention."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from kdviz.adapters.family import AttentionTap, LensParts, ModelFamily
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


BLOCK_LISTS = ("layers", "h", "blocks")
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "norm_f")
POSITION_TABLES = ("wpe", "position_embeddings")


class HuggingFace(ModelFamily):
    """``transformers`` models: called with keyword inputs and ``return_dict``; attentions from ``output_attentions``
    under eager attention (switched for the capture when the model uses sdpa or flash); every layer's hidden state
    when no layers are named; ``main_input_name``, ``get_input_embeddings``, ``pad_token_id`` from the model."""

    name = "huggingface"

    def claims(self, model: nn.Module) -> bool:
        return is_hf_model(model)

    def tap_attentions(self, model: nn.Module, role: str, stack: contextlib.ExitStack, *, keep_graph: bool) -> AttentionTap:
        return AttentionTap("output_attentions", stack.enter_context(eager_attention(model, role)))

    def attention_modules(self, model: nn.Module) -> tuple[list[nn.Module], int] | None:
        # transformers ≥ 5 names the class whose output carries the attention weights in _can_record_outputs; under
        # eager attention those modules return the weights whether or not output_attentions is set
        for sub in model.modules():
            spec = (getattr(type(sub), "_can_record_outputs", None) or {}).get("attentions")
            if spec is None:
                continue
            target = spec if isinstance(spec, type) else getattr(spec, "target_class", None)
            index = 1 if isinstance(spec, type) else int(getattr(spec, "index", 1))
            layer_name = None if isinstance(spec, type) else getattr(spec, "layer_name", None)
            if target is None:
                return None
            found = [m for name, m in sub.named_modules() if isinstance(m, target)
                     and (layer_name is None or f".{layer_name.strip('.')}." in f".{name}.")]
            return (found, index) if found else None
        return None

    def gives_hidden_states(self, model: nn.Module) -> bool:
        return True

    def call(self, model: nn.Module, inputs: Any, *, attentions: bool, hidden_states: bool) -> Any:
        kwargs = dict(inputs) if isinstance(inputs, dict) else {model.main_input_name: inputs}
        return model(**kwargs, output_attentions=attentions, output_hidden_states=hidden_states, return_dict=True)

    def call_options(self, model: nn.Module) -> dict[str, Any]:
        return {"return_dict": True}

    def attentions_of(self, output: Any, tap: AttentionTap, role: str, model: nn.Module, *,
                      keep_graph: bool) -> list[torch.Tensor]:
        maps = getattr(output, "attentions", None)
        if not maps or any(a is None for a in maps):
            raise CaptureError(
                f"the {role} returned no attention weights (attention implementation: {attention_implementation(model)}); "
                "load it with attn_implementation='eager' or pass attentions=False"
            )
        if not tap.names:
            tap.names = layer_names(model, len(maps))
        # as the model computed them: capture digests them in float32 and stores float16 exact maps itself
        return [a if keep_graph else a.detach() for a in maps]

    def hidden_states_of(self, output: Any) -> dict[str, torch.Tensor]:
        states = getattr(output, "hidden_states", None) or ()
        return {f"hidden.{i}": h.detach().float() for i, h in enumerate(states)}

    def main_input_name(self, model: nn.Module) -> str | None:
        return getattr(model, "main_input_name", None)

    def input_embeddings(self, model: nn.Module) -> nn.Module | None:
        return model.get_input_embeddings()

    def token_rows(self, model: nn.Module) -> int | None:
        embedding = model.get_input_embeddings()
        return embedding.num_embeddings if isinstance(embedding, nn.Embedding) else None

    def position_rows(self, model: nn.Module) -> int | None:
        # GPT-2's wpe and BERT's position_embeddings are plain tables with one row per position (OPT's table is
        # offset by 2 and not claimed here)
        base = getattr(model, "base_model", model)
        for holder in (base, getattr(base, "embeddings", None)):
            for name in POSITION_TABLES:
                table = getattr(holder, name, None)
                if type(table) is nn.Embedding:
                    return table.num_embeddings
        return None

    def pad_token_id(self, model: nn.Module) -> int:
        return getattr(getattr(model, "config", None), "pad_token_id", None) or 0

    def predicts_next_token(self, model: nn.Module) -> bool:
        return is_causal_lm(model)

    def summary_token(self, model: nn.Module) -> str:
        # decoder classifiers (LlamaForSequenceClassification…) read the last real token: their attention is causal
        causal = is_causal_lm(model) or any(getattr(m, "is_causal", False) is True for m in model.modules())
        return "last" if causal else "first"

    def lens_parts(self, model: nn.Module) -> LensParts | None:
        # the base model's block list and final norm go by a few names: Llama/Qwen2/Mistral (layers, norm), GPT-2
        # (h, ln_f), OPT (decoder.layers, decoder.final_layer_norm), GPT-NeoX (layers, final_layer_norm)
        if not is_causal_lm(model):
            return None
        base = getattr(model, "base_model", model)
        base = getattr(base, "decoder", base)
        blocks = next((getattr(base, n) for n in BLOCK_LISTS if isinstance(getattr(base, n, None), nn.ModuleList)), None)
        norm = next((getattr(base, n) for n in FINAL_NORMS if isinstance(getattr(base, n, None), nn.Module)), None)
        head = model.get_output_embeddings()
        if blocks is None or norm is None or head is None or len(blocks) == 0:
            return None
        return LensParts(list(blocks), norm, head)

    def output_head(self, model: nn.Module) -> nn.Linear | None:
        head = model.get_output_embeddings() if is_causal_lm(model) else None
        return head if isinstance(head, nn.Linear) else None
