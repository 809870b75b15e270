"""`ModelFamily`: what kdviz needs to know about one kind of model, in one place.

Capture, attribution and training ask a model's family (`kdviz.adapters.registry.family_of`) instead of branching
on what the model is: how to call it, how its attention probabilities are obtained, its main input, its input
embeddings, its pad token, whether position t predicts token t + 1, and where its tokens sit on an image. A family
overrides only what differs from a plain ``nn.Module``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdviz.adapters.layout import token_grid


@dataclass
class AttentionTap:
    """How one model's attention probabilities are read during a capture. ``source`` names the way
    (``"output_attentions"``, ``"timm-eager-switch"``, …, or ``"none"``); ``switched_from`` is the attention
    implementation that was switched away from for the capture, if any; ``names`` label the layers."""

    source: str = "none"
    switched_from: str | None = None
    names: list[str] = field(default_factory=list)
    collector: Any = None  # an object with collect() -> list[Tensor], for hook-based taps

    def collect(self, output: Any) -> list[torch.Tensor]:
        return self.collector.collect() if self.collector is not None else []


@dataclass(frozen=True)
class LensParts:
    """What a logit lens needs of a causal LM: its decoder blocks in order (the input of the first is the
    embedding), the norm applied after the last block, and the unembedding."""

    blocks: list[nn.Module]
    norm: nn.Module
    head: nn.Module


class ModelFamily:
    """A plain ``nn.Module``: called as ``model(x)`` or ``model(**inputs)``, no attention probabilities, features by
    forward hooks (common to every family), a square token grid guessed from image inputs."""

    name = "module"

    def claims(self, model: nn.Module) -> bool:
        """Whether this family knows how to handle ``model`` (the registry asks the families in order)."""
        return True

    def tap_attentions(self, model: nn.Module, role: str, stack: contextlib.ExitStack, *,
                       keep_graph: bool) -> AttentionTap:
        """Make the model's attention probabilities readable for the capture; everything is undone by ``stack``."""
        return AttentionTap()

    def attention_modules(self, model: nn.Module) -> tuple[list[nn.Module], int] | None:
        """The modules whose forward output holds one layer's attention probabilities each, in layer order, and the
        index of the probabilities in that output: capture can then take each layer as it is computed instead of
        holding all of them (None: the family collects them after the forward pass)."""
        return None

    def gives_hidden_states(self, model: nn.Module) -> bool:
        """Whether the model returns every layer's hidden states when asked (recorded as features by default)."""
        return False

    def call(self, model: nn.Module, inputs: Any, *, attentions: bool, hidden_states: bool) -> Any:
        """One forward pass of ``model`` on a batch (a tensor or a dict of tensors, on the model's device)."""
        return model(**inputs) if isinstance(inputs, dict) else model(inputs)

    def call_options(self, model: nn.Module) -> dict[str, Any]:
        """Keyword arguments every call of the model takes (attribution calls it through captum)."""
        return {}

    def attentions_of(self, output: Any, tap: AttentionTap, role: str, model: nn.Module, *,
                      keep_graph: bool) -> list[torch.Tensor]:
        """[B, H, T, T] per layer, from one call's output or the tap's hooks."""
        return tap.collect(output)

    def hidden_states_of(self, output: Any) -> dict[str, torch.Tensor]:
        return {}

    def main_input_name(self, model: nn.Module) -> str | None:
        """The key of the input that capture records and attribution explains, for dict inputs (None: guessed)."""
        return None

    def input_embeddings(self, model: nn.Module) -> nn.Module | None:
        """The embedding module of a model that takes token ids (the first ``nn.Embedding``)."""
        return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)

    def token_rows(self, model: nn.Module) -> int | None:
        """How many token ids the model can read (its token embedding's rows); None where that is not known for
        sure, and ids are then not checked."""
        return None

    def position_rows(self, model: nn.Module) -> int | None:
        """How many positions the model can read, where a learned position embedding bounds it (GPT-2, BERT); None
        where nothing bounds it for sure (rotary models extrapolate), and lengths are then not checked."""
        return None

    def pad_token_id(self, model: nn.Module) -> int:
        """The token id of an integrated-gradients baseline for text."""
        return 0

    def predicts_next_token(self, model: nn.Module) -> bool:
        """Whether the logits at position t score token t + 1 (a plain language model is taken to be causal)."""
        return True

    def output_head(self, model: nn.Module) -> nn.Linear | None:
        """The Linear that turns a language model's last hidden states into its logits, when it has one kdviz can run
        itself a block of tokens at a time (None: the model's own logits are used)."""
        return None

    def lens_parts(self, model: nn.Module) -> LensParts | None:
        """The decoder blocks, final norm and unembedding a logit lens reads a causal LM through (None: unknown)."""
        return None

    def summary_token(self, model: nn.Module) -> str:
        """Which token sums a sequence up for a classifier: ``"first"`` (CLS) or ``"last"`` (causal attention)."""
        return "first"

    def token_grid(self, model: nn.Module, n_tokens: int, input_shape: tuple[int, ...] | None) -> dict[str, Any] | None:
        """``{"prefix": P, "grid": [rows, cols]}`` when the model's tokens are P prefix tokens and an image patch grid."""
        return token_grid(model, n_tokens, input_shape)
