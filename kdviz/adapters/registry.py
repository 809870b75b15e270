"""The model families kdviz knows, asked in order: the first that claims a model handles it.

Adding a family is one module with a `ModelFamily` subclass and one line here (or `register` from outside);
tests/test_model_families.py runs the protocol test for every registered family.
"""

from __future__ import annotations

from torch import nn

from kdviz.adapters.family import ModelFamily
from kdviz.adapters.fused import FusedAttention
from kdviz.adapters.hf import HuggingFace
from kdviz.errors import InputError

FAMILIES: list[ModelFamily] = [HuggingFace(), FusedAttention(), ModelFamily()]
"""Most specific first; the plain ``nn.Module`` family claims every model, so it stays last."""


def family_of(model: nn.Module) -> ModelFamily:
    """The family that handles ``model``."""
    return next(family for family in FAMILIES if family.claims(model))


def register(family: ModelFamily) -> None:
    """Add a family, asked before the built-in ones (so it can claim models they would take)."""
    if any(existing.name == family.name for existing in FAMILIES):
        raise InputError(f"a model family named {family.name!r} is registered already; give yours another name")
    FAMILIES.insert(0, family)
