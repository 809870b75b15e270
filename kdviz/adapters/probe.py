"""One model prepared for capture: eval mode, device, eager attention, hooks; all undone on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdviz.adapters import fused, hf
from kdviz.adapters.hooks import FeatureHooks, resolve_modules
from kdviz.adapters.outputs import extract_logits
from kdviz.errors import CaptureError
from kdviz.metrics.attention import spatial_attention


@dataclass
class ProbeOutput:
    """What one forward pass gave: logits [B, C] or [B, T, V], attentions [B, H, T, T] per layer, features by name."""

    logits: torch.Tensor
    attentions: list[torch.Tensor] = field(default_factory=list)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    spatial: dict[str, torch.Tensor] = field(default_factory=dict)


class ModelProbe:
    """Runs one model (teacher or student) over batches and pulls out its internals.

    Use as a context manager: on entry the model is put in eval mode, moved to ``device``, switched to eager
    attention if it is a Hugging Face model using sdpa/flash, and hooked; on exit (normal or by exception) the
    hooks are removed and the mode, device and attention implementation are restored.
    With ``keep_graph`` (attribution, training losses), attentions and features are returned as the model computed
    them, inside its autograd graph (not detached, not cast), so gradients with respect to them can be taken.
    ``eval_mode=False`` leaves the model's train/eval mode to the caller (the student while it is trained).
    """

    def __init__(
        self,
        model: nn.Module,
        role: str,
        *,
        layers: Sequence[str] | None,
        attentions: bool,
        device: torch.device,
        spatial_p: float | None = 2.0,
        name: str | None = None,
        keep_graph: bool = False,
        eval_mode: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CaptureError(f"the {role} must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.role = role
        self.device = device
        self.want_attentions = attentions
        self.spatial_p = spatial_p
        self.name = name or type(model).__name__
        self.keep_graph = keep_graph
        self.eval_mode = eval_mode
        self.is_hf = hf.is_hf_model(model)
        self.layer_patterns = list(layers) if layers is not None else None
        self.hidden_states = self.is_hf and layers is None
        self.attention_source = "none"
        self.switched_from: str | None = None
        self._stack = contextlib.ExitStack()
        self._features: FeatureHooks | None = None
        self._fused: fused.FusedAttentionHooks | None = None
        self._attention_names: list[str] = []

    # ---- lifecycle ----
    def __enter__(self) -> ModelProbe:
        stack = self._stack
        try:
            self._enter(stack)
        except BaseException:
            stack.close()
            raise
        return self

    def _enter(self, stack: contextlib.ExitStack) -> None:
        model = self.model
        modes = [(module, module.training) for module in model.modules()]  # mixed modes (frozen BN) are kept
        if self.eval_mode:
            model.eval()
        stack.callback(_restore_modes, modes)
        original_device = next((p.device for p in model.parameters()), None)
        if original_device is not None and original_device != self.device:
            model.to(self.device)
            stack.callback(model.to, original_device)
        if self.want_attentions and self.is_hf:
            self.switched_from = stack.enter_context(hf.eager_attention(model, self.role))
            self.attention_source = "output_attentions"
        elif self.want_attentions:
            names = fused.find_fused_attention(model)
            if names:
                self._fused = fused.FusedAttentionHooks(model, names, keep_graph=self.keep_graph)
                stack.callback(self._fused.remove)
                if self.keep_graph and self._fused.source != "timm-eager-switch":
                    raise CaptureError(
                        f"the {self.role}'s attention blocks recompute their probabilities outside the model's graph "
                        "(no fused_attn flag and attn_drop module), so gradients with respect to them cannot be taken; "
                        "give the blocks timm's eager path or leave out attention_x_gradient"
                    )
                self._attention_names = names
                self.attention_source = self._fused.source
        if self.layer_patterns:
            names = resolve_modules(model, self.layer_patterns, self.role)
            self._features = FeatureHooks(model, names, self.role, keep_graph=self.keep_graph)
            stack.callback(self._features.remove)

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    # ---- one batch ----
    def forward(self, inputs: torch.Tensor | dict[str, Any]) -> ProbeOutput:
        """Run the model on one batch (already on the device) and collect what was asked for."""
        if self.is_hf:
            kwargs = dict(inputs) if isinstance(inputs, dict) else {self.model.main_input_name: inputs}
            output = self.model(
                **kwargs, output_attentions=self.want_attentions, output_hidden_states=self.hidden_states, return_dict=True
            )
        else:
            output = self.model(**inputs) if isinstance(inputs, dict) else self.model(inputs)
        result = ProbeOutput(logits=extract_logits(output, self.role))
        if self.is_hf:
            self._read_hf_outputs(output, result)
        elif self._fused is not None:
            result.attentions = self._fused.collect()
        if self._features is not None:
            result.features.update(self._features.collect())
        if self.spatial_p:
            result.spatial = {
                name: spatial_attention(value, self.spatial_p) for name, value in result.features.items() if value.ndim == 4
            }
        return result

    def _read_hf_outputs(self, output: Any, result: ProbeOutput) -> None:
        if self.want_attentions:
            maps = getattr(output, "attentions", None)
            if not maps or any(a is None for a in maps):
                raise CaptureError(
                    f"the {self.role} returned no attention weights (attention implementation: "
                    f"{hf.attention_implementation(self.model)}); load it with attn_implementation='eager' or pass attentions=False"
                )
            result.attentions = list(maps) if self.keep_graph else [a.detach().to(torch.float16) for a in maps]
            if not self._attention_names:
                self._attention_names = hf.layer_names(self.model, len(maps))
        if self.hidden_states:
            states = getattr(output, "hidden_states", None) or ()
            result.features.update({f"hidden.{i}": h.detach().float() for i, h in enumerate(states)})

    @property
    def attention_names(self) -> list[str]:
        return list(self._attention_names)

    def describe(self) -> dict[str, Any]:
        """The model's entry in ``meta.json`` (structure fields are added by capture after the first batch)."""
        return {
            "name": self.name,
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "n_params": int(sum(p.numel() for p in self.model.parameters())),
            "attention_source": self.attention_source,
            "attention_switched_from": self.switched_from,
            "layer_patterns": self.layer_patterns,
        }


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training
