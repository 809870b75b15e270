"""The Overview's settings table says only true things: a capture that asked for attention maps of models that have
none says so, instead of "attentions True" beside "no attention layers captured"."""

from __future__ import annotations

import re

import torch
from conftest import TinyCNN, gpt2_pair

import kdviz
from kdviz.views.overview import settings_table


def row(table: str, name: str) -> str:
    match = re.search(rf"<tr><td>{re.escape(name)}</td><td>(.*?)</td></tr>", table)
    assert match, table
    return match.group(1)


def test_attentions_asked_of_models_without_attention_layers_are_said_to_be_absent(tmp_path):
    torch.manual_seed(0)
    images = (torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,)))
    cnn = kdviz.capture(TinyCNN(), TinyCNN(4), images, path=tmp_path / "cnn.kdviz", progress=False)
    assert cnn.meta["capture"]["attentions"] is True and not cnn.teacher.heads
    assert row(settings_table(cnn.meta), "capture: attentions") == \
        "on, none captured: the teacher and the student have no attention layers"
    teacher, student = gpt2_pair()
    lm = kdviz.capture(teacher, student, {"input_ids": torch.randint(0, 50, (2, 8))}, path=tmp_path / "lm.kdviz",
                       progress=False)
    assert row(settings_table(lm.meta), "capture: attentions") == "True"  # both have heads: captured as asked
    off = kdviz.capture(teacher, student, {"input_ids": torch.randint(0, 50, (2, 8))}, path=tmp_path / "off.kdviz",
                        attentions=False, progress=False)
    assert row(settings_table(off.meta), "capture: attentions") == "False"
