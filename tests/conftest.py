"""Shared fixtures: the demo runs (built once per session), small models, Hugging Face pairs built from configs."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """The four demo runs without attributions, built once by `kdviz demo --build-only --no-attributions` from
    the committed weights (about 10 s on 2 cores): {name: Run}. Read-only: tests never write into them."""
    from kdviz.cli import main
    from kdviz.store import Run

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--build-only", str(out), "--quiet", "--no-attributions"]) == 0
    return {path.name.removesuffix(".kdviz"): Run.open(path) for path in sorted(out.glob("*.kdviz"))}


@pytest.fixture(scope="session")
def explained_demo_runs(demo_runs, tmp_path_factory):
    """The demo runs as `kdviz demo` serves them: a copy of `demo_runs` with both models' attributions added by
    `add_demo_attributions`, as `kdviz demo` does. Built once, only when a test asks for it: {name: Run}."""
    from kdviz.demo.build import add_demo_attributions
    from kdviz.store import Run

    out = tmp_path_factory.mktemp("demo-explained")
    runs = {}
    from kdviz.demo.build import DEMO_ATTRIBUTIONS

    for name, run in demo_runs.items():
        shutil.copytree(run.path, out / run.path.name)
        copy = Run.open(out / run.path.name)
        runs[name] = add_demo_attributions(copy, progress=False) if name in DEMO_ATTRIBUTIONS else copy
    return runs


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, split as the demo splits them (read-only: tests slice it, never change it)."""
    from kdviz.demo.data import load_digits

    return load_digits()


class TinyCNN(nn.Module):
    def __init__(self, width: int = 8, n_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


@pytest.fixture
def cnn_pair():
    torch.manual_seed(0)
    return TinyCNN(8), TinyCNN(4)


def bert_pair(attn_implementation: str = "eager", n_labels: int = 3, max_positions: int = 64):
    """BERT teacher 4 layers × 4 heads and student 2 × 2, sequence classification, random weights from configs."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    common = {"vocab_size": 120, "max_position_embeddings": max_positions, "num_labels": n_labels, "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1}
    teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=4, num_attention_heads=4, hidden_size=32,
                                                       intermediate_size=64, **common))
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                                                       intermediate_size=32, **common))
    for model in (teacher, student):
        model.set_attn_implementation(attn_implementation)
    return teacher, student


def gpt2_pair(vocab: int = 50):
    """GPT-2 LM teacher 4 layers × 4 heads and student 2 × 2, random weights from configs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    common = {"vocab_size": vocab, "n_positions": 32, "bos_token_id": 0, "eos_token_id": 0}
    teacher = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=32, **common))
    student = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, **common))
    teacher.set_attn_implementation("eager")
    student.set_attn_implementation("sdpa")  # capture must switch this one to eager and back
    return teacher, student


def hook_count(model: nn.Module, only_kdviz: bool = False) -> int:
    """Forward hooks and pre-hooks on any module of ``model`` (only those kdviz defined, with ``only_kdviz``)."""
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return sum(1 for h in hooks if not only_kdviz or getattr(h, "__module__", "").startswith("kdviz"))


# lines a test wants in the run's output even when it passes (measurements, not assertions): `report(line)`
MEASUREMENTS: list[str] = []


def report(line: str) -> None:
    """Print ``line`` at the end of the test run, under "kdviz measurements" (pytest hides a passing test's output)."""
    MEASUREMENTS.append(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("kdviz measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
