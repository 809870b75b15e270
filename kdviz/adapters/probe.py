"""One model prepared for capture: eval mode, device, eager attention, hooks; all undone on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdviz.adapters.family import AttentionTap
from kdviz.adapters.hooks import FeatureHooks, resolve_modules
from kdviz.adapters.outputs import extract_logits
from kdviz.adapters.registry import family_of
from kdviz.errors import CaptureError, InputError
from kdviz.metrics.attention import spatial_attention
from kdviz.metrics.vocabulary import HeadLogits


@dataclass
class ProbeOutput:
    """What one forward pass gave: logits [B, C] or [B, T, V], attentions [B, H, T, T] per layer, features by name."""

    logits: torch.Tensor | HeadLogits
    attentions: list[torch.Tensor] = field(default_factory=list)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    spatial: dict[str, torch.Tensor] = field(default_factory=dict)


class ModelProbe:
    """Runs one model (teacher or student) over batches and pulls out its internals.

    Use as a context manager: on entry the model is put in eval mode, moved to ``device``, its attention made
    readable by its family (`kdviz.adapters.registry`: Hugging Face switches sdpa/flash to eager, timm-style blocks
    are hooked), and hooked for features; on exit (normal or by exception) the hooks are removed and the mode,
    device and attention implementation are restored.
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
        head_logits: bool = False,
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
        self.family = family_of(model)
        self._token_rows = self.family.token_rows(model)
        self.layer_patterns = list(layers) if layers is not None else None
        self.hidden_states = self.family.gives_hidden_states(model) and layers is None
        self.tap = AttentionTap()
        # a language model's logits as its last hidden states and its output head (`vocabulary.HeadLogits`)
        self.head_logits = head_logits and not keep_graph
        self._head: nn.Linear | None = None
        self._head_input: torch.Tensor | None = None
        self._head_buffers: list[torch.Tensor] = []  # `HeadLogits`' block buffer, kept from batch to batch
        self._running = False  # inside this probe's `forward`
        self._stack = contextlib.ExitStack()
        self._features: FeatureHooks | None = None
        self._stream: Callable[[int, torch.Tensor], None] | None = None  # where streamed layers go (`stream_attentions`)
        self._streamable = False
        self.streamed = 0  # layers handed to the stream in the last forward pass

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
        if self.want_attentions:
            self.tap = self.family.tap_attentions(model, self.role, stack, keep_graph=self.keep_graph)
            modules = None if self.keep_graph else self.family.attention_modules(model)
            if modules is not None:
                layers, index = modules
                for layer, module in enumerate(layers):
                    handle = module.register_forward_hook(self._streaming_hook(layer, index))
                    stack.callback(handle.remove)
                self._streamable = True
        head = self.family.output_head(model) if self.head_logits else None
        if head is not None:
            self._head = head
            self._head_hook = head.register_forward_pre_hook(self._keep_head_input)
            stack.callback(self._head_hook.remove)
        if self.layer_patterns:
            names = resolve_modules(model, self.layer_patterns, self.role)
            self._features = FeatureHooks(model, names, self.role, keep_graph=self.keep_graph)
            stack.callback(self._features.remove)

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
        self._head_buffers.clear()

    # ---- streaming attention ----
    @property
    def can_stream(self) -> bool:
        """Whether `stream_attentions` can hand this model's attention layers over as they are computed."""
        return self._streamable

    def stream_attentions(self, sink: Callable[[int, torch.Tensor], None] | None) -> bool:
        """From the next forward pass on, hand each layer's [B, H, T, T] attention to ``sink(layer, maps)`` as the
        model computes it, instead of collecting every layer (``None``: collect again). False when the model's family
        cannot stream (the attentions are then collected as before)."""
        self._stream = sink if self._streamable else None
        return self._stream is not None

    def _streaming_hook(self, layer: int, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._stream is None or not self._running:
                return
            maps = output[index] if isinstance(output, tuple) and len(output) > index else None
            if not isinstance(maps, torch.Tensor):
                raise CaptureError(f"the {self.role}'s attention layer {layer} gave no attention weights while streaming; "
                                   "load it with attn_implementation='eager'")
            self.streamed += 1
            self._stream(layer, maps.detach())
        return hook

    # ---- one batch ----
    def forward(self, inputs: torch.Tensor | dict[str, Any], offset: int = 0) -> ProbeOutput:
        """Run the model on one batch (already on the device) and collect what was asked for; ``offset`` is the
        batch's first sample in the data, for errors."""
        family, model = self.family, self.model
        self.check_token_ids(inputs, offset)
        self._head_input = None
        self.streamed = 0
        collect = self.want_attentions and self._stream is None
        self._running = True  # this probe's hooks act on this pass only (a model compared with itself has two probes)
        try:
            output = family.call(model, inputs, attentions=collect, hidden_states=self.hidden_states)
        finally:
            self._running = False
        result = ProbeOutput(logits=self._logits(output, inputs))
        if collect:
            result.attentions = family.attentions_of(output, self.tap, self.role, model, keep_graph=self.keep_graph)
        if self.hidden_states:
            result.features.update(family.hidden_states_of(output))
        if self._features is not None:
            result.features.update(self._features.collect())
        if self.spatial_p:
            result.spatial = {
                name: spatial_attention(value, self.spatial_p) for name, value in result.features.items() if value.ndim == 4
            }
        return result

    def check_token_ids(self, inputs: torch.Tensor | dict[str, Any], offset: int = 0) -> None:
        """Refuse token ids the model's embedding has no row for, and sequences longer than its position table,
        before the model fails on them with a bare IndexError (a text tokenized for the other model, whose
        vocabulary is larger; a text longer than GPT-2's or BERT's positions)."""
        name = self.family.main_input_name(self.model)
        ids = inputs.get(name) if isinstance(inputs, dict) and name else None
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.numel() == 0:
            return
        positions = self.family.position_rows(self.model)
        if positions is not None and ids.ndim == 2 and ids.shape[1] > positions:
            raise InputError(
                f"the {self.role} ({self.name}) reads at most {positions} positions, but the inputs hold "
                f"{ids.shape[1]} tokens; cut them to {positions} (max_length={positions}, or truncation in the tokenizer)")
        rows = self._token_rows
        if rows is None:
            return
        bad = (ids >= rows) | (ids < 0)
        if bool(bad.any()):
            first = torch.nonzero(bad)[0].tolist()
            sample, position = first[0], (first[1] if len(first) > 1 else 0)
            value = int(ids[tuple(first)])
            raise InputError(
                f"the {self.role} ({self.name}) reads token ids 0…{rows - 1}, but sample {offset + sample} holds id "
                f"{value} at position {position}; tokenize the text with the {self.role}'s own tokenizer (models with "
                "different tokenizers each need their own ids), or check that the tokenizer belongs to this model"
            )

    def _keep_head_input(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Forward pre-hook on the output head: keep its input [B, T, D] and let it compute the last position only."""
        hidden = args[0] if args else None
        if not self._running or not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
            return None
        self._head_input = hidden
        return (hidden[:, -1:], *args[1:])

    def _logits(self, output: Any, inputs: Any) -> torch.Tensor | HeadLogits:
        """The model's logits, or `HeadLogits` when its head was deferred. The last position, which the model still
        computed, must equal the head applied to the kept input; a model that changes logits after its head (scaling,
        soft-capping) fails that, and is run again whole, for this batch and the next."""
        logits = extract_logits(output, self.role)
        if self._head_input is None:
            return logits
        deferred = HeadLogits(self._head_input, self._head, self._head_buffers)
        if logits.shape[1] == 1 and torch.allclose(deferred[:, -1:].float(), logits.float(), rtol=1e-3, atol=1e-3):
            return deferred
        self.head_logits, self._head = False, None  # the head is not the last step: take the logits as they come
        self._head_hook.remove()
        self._head_input = None
        sink, self._stream = self._stream, None  # the layers of this batch were streamed already
        try:
            return extract_logits(self.family.call(self.model, inputs, attentions=False, hidden_states=False), self.role)
        finally:
            self._stream = sink

    @property
    def attention_names(self) -> list[str]:
        return list(self.tap.names)

    @property
    def attention_source(self) -> str:
        """How the attention probabilities are read (``"none"`` when the model gives none)."""
        return self.tap.source

    @property
    def switched_from(self) -> str | None:
        """The attention implementation switched away from for the capture, if any."""
        return self.tap.switched_from

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


def logit_probes(teacher: nn.Module, student: nn.Module, device: torch.device) -> dict[str, ModelProbe]:
    """{"teacher": …, "student": …}: a probe of each model that gives its logits only (no features, no attention),
    for the language-model tools that score text with both models."""
    return {role: ModelProbe(model, role, layers=[], attentions=False, device=device)
            for role, model in (("teacher", teacher), ("student", student))}


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training
