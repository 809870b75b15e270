"""The model-family protocol (`kdviz.adapters.registry`), run for every registered family on a real model of that
family: the registry picks it, its answers have the right types and values, and a capture through it records
what the family says it gives."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import torch
from conftest import TinyCNN, bert_pair, gpt2_pair
from torch import nn

import kdviz
from kdviz.adapters.family import ModelFamily
from kdviz.adapters.outputs import extract_logits
from kdviz.adapters.registry import FAMILIES, family_of, register
from kdviz.demo.models import DigitsViT
from kdviz.errors import InputError


def _bert() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    teacher, student = bert_pair()
    return teacher, student, torch.randint(1, 120, (4, 10), generator=torch.Generator().manual_seed(0))


def _gpt2() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    teacher, student = gpt2_pair()
    return teacher, student, torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))


def _vit() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return DigitsViT(dim=16, depth=2, num_heads=2), DigitsViT(dim=16, depth=1, num_heads=2), torch.randn(4, 1, 8, 8)


def _cnn() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyCNN(8), TinyCNN(4), torch.randn(4, 1, 8, 8)


# an example pair of every registered family, and what the family must say about it
EXAMPLES: dict[str, list[tuple[Callable[[], tuple[nn.Module, nn.Module, torch.Tensor]], dict]]] = {
    "huggingface": [(_bert, {"attentions": True, "next_token": False, "main": "input_ids", "embeddings": True, "grid": False,
                             "task": "classification"}),
                    (_gpt2, {"attentions": True, "next_token": True, "main": "input_ids", "embeddings": True, "grid": False,
                             "task": "tokens"})],
    "fused-attention": [(_vit, {"attentions": True, "next_token": True, "main": None, "embeddings": False, "grid": True,
                                "task": "classification"})],
    "module": [(_cnn, {"attentions": False, "next_token": True, "main": None, "embeddings": False, "grid": False,
                       "task": "classification"})],
}
CASES = [(family.name, make, expected) for family in FAMILIES for make, expected in EXAMPLES.get(family.name, [(None, {})])]


def test_every_registered_family_has_an_example_here():
    assert sorted(EXAMPLES) == sorted(family.name for family in FAMILIES), "add an example pair for the new family"


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_family_protocol(name, make, expected, tmp_path):
    teacher, student, inputs = make()
    family = family_of(teacher)
    assert family.name == name and family_of(student).name == name
    assert family.main_input_name(teacher) == expected["main"]
    embeddings = family.input_embeddings(teacher)
    assert (embeddings is not None) == expected["embeddings"]
    if embeddings is not None:
        assert isinstance(embeddings, nn.Embedding) and embeddings.num_embeddings >= int(inputs.max()) + 1
    assert isinstance(family.pad_token_id(teacher), int)
    assert family.predicts_next_token(teacher) is expected["next_token"]
    # one call with attentions tapped: logits come out, and attention maps [B, H, T, T] when the family gives them
    with contextlib.ExitStack() as stack, torch.no_grad():
        teacher.eval()
        tap = family.tap_attentions(teacher, "teacher", stack, keep_graph=False)
        output = family.call(teacher, inputs, attentions=True, hidden_states=False)
        assert extract_logits(output, "teacher").shape[0] == len(inputs)
        maps = family.attentions_of(output, tap, "teacher", teacher, keep_graph=False)
    assert (tap.source != "none") == expected["attentions"] and bool(maps) == expected["attentions"]
    for attention in maps:
        assert attention.ndim == 4 and attention.shape[0] == len(inputs) and attention.shape[-1] == attention.shape[-2]
        torch.testing.assert_close(attention.float().sum(-1), torch.ones(attention.shape[:-1]), atol=2e-3, rtol=0)
    tokens = maps[0].shape[-1] if maps else None
    grid = family.token_grid(teacher, tokens, tuple(inputs.shape)) if tokens else None
    assert (grid is not None) == expected["grid"]
    # a capture through the family records what it says it gives
    run = kdviz.capture(teacher, student, inputs, path=tmp_path / f"{name}.kdviz", progress=False, layers=[])
    assert bool(run.teacher.attention_layers) == expected["attentions"]
    assert run.meta["teacher"]["attention_source"] == tap.source
    assert run.task == expected["task"]


class Doubler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.sum(-1), 2 * x.sum(-1)], dim=-1)


class DoublerFamily(ModelFamily):
    """A family from outside kdviz: claims `Doubler` models and says their pad token is 7."""

    name = "doubler"

    def claims(self, model: nn.Module) -> bool:
        return isinstance(model, Doubler)

    def pad_token_id(self, model: nn.Module) -> int:
        return 7


def test_a_family_registered_from_outside_is_asked_first(monkeypatch):
    monkeypatch.setattr("kdviz.adapters.registry.FAMILIES", list(FAMILIES))
    assert family_of(Doubler()).name == "module"
    register(DoublerFamily())
    assert family_of(Doubler()).name == "doubler" and family_of(Doubler()).pad_token_id(Doubler()) == 7
    assert family_of(TinyCNN(4)).name == "module"
    with pytest.raises(InputError, match="registered already"):
        register(DoublerFamily())
