"""Reproducible training of the demo pairs (``kdviz demo --retrain``): fixed seeds, teacher first, student by KD.

The students are distilled with Hinton KD, α·CE + (1−α)·T²·KL(p_t‖p_s), where KL comes from
`kdviz.metrics.logits.kl` so the formula lives in one place. Weights are written as safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdviz.demo import data as demo_data
from kdviz.demo.cross_training import train_cross_tokenizer_pair
from kdviz.demo.fitting import fit
from kdviz.demo.history import distill_with_checkpoints, save_history
from kdviz.demo.models import build
from kdviz.demo.weights import save_model
from kdviz.metrics.logits import kl

SEED = 1234
PAIRS: dict[str, dict[str, Any]] = {
    "cnn": {
        "teacher": {"kind": "cnn", "kwargs": {"widths": [32, 64, 64]}},
        "student": {"kind": "cnn", "kwargs": {"widths": [8, 16, 16]}},
        "train": {"epochs": 30, "lr": 2e-3, "batch_size": 64, "T": 4.0, "alpha": 0.5},
    },
    "vit": {
        "teacher": {"kind": "vit", "kwargs": {"dim": 64, "depth": 4, "num_heads": 4, "patch": 2}},
        "student": {"kind": "vit", "kwargs": {"dim": 32, "depth": 2, "num_heads": 2, "patch": 2}},
        "train": {"epochs": 80, "lr": 2e-3, "batch_size": 64, "T": 4.0, "alpha": 0.5},
    },
    "charlm": {
        "teacher": {"kind": "char_lm", "kwargs": {"n_layer": 4, "n_head": 4, "n_embd": 64}},
        "student": {"kind": "char_lm", "kwargs": {"n_layer": 2, "n_head": 2, "n_embd": 32}},
        "train": {"steps": 1500, "lr": 3e-3, "batch_size": 32, "T": 1.0, "alpha": 0.5},
    },
    # two tokenizers (`kdviz.demo.cross_training`): the student learns by α·CE + (1 − α)·ULD at shared boundaries
    "crosslm": {
        "teacher": {"kind": "char_lm", "kwargs": {"n_layer": 4, "n_head": 4, "n_embd": 64, "n_positions": 160}},
        "student": {"kind": "char_lm", "kwargs": {"n_layer": 2, "n_head": 2, "n_embd": 48, "n_positions": 160}},
        "tokenizers": {"teacher": {"scheme": "byte_level", "size": 1024},
                       "student": {"scheme": "sentencepiece", "size": 768}},
        "train": {"steps": 1500, "lr": 3e-3, "batch_size": 32, "window": 64, "alpha": 0.5, "loss": "CE + ULD"},
    },
}


def kd_loss(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """α·CE(y, p_s) + (1−α)·T²·KL(p_t‖p_s), averaged over samples (batchmean)."""
    return alpha * F.cross_entropy(z_s, y) + (1 - alpha) * kl(z_t, z_s, T, t2_scale=True).mean().float()


def _epochs(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            yield x[index], y[index]


def train_image_pair(pair: str, settings: dict[str, Any], fast: bool = False,
                     progress: bool = True) -> tuple[nn.Module, nn.Module, tuple | None]:
    """Teacher by CE, then student by KD from the frozen teacher, on the digits training split; for the CNN the
    student is distilled by `kdviz.distill` and the third item is its history (`distill_with_checkpoints`)."""
    digits = demo_data.load_digits()
    train = settings["train"]
    epochs = 1 if fast else train["epochs"]
    steps = epochs * -(-len(digits.x_train) // train["batch_size"])
    torch.manual_seed(SEED)
    teacher = build(settings["teacher"]["kind"], settings["teacher"]["kwargs"])
    student = build(settings["student"]["kind"], settings["student"]["kwargs"])
    fit(teacher, _epochs(digits.x_train, digits.y_train, epochs, train["batch_size"], SEED), steps, train["lr"],
         lambda x, y: F.cross_entropy(teacher(x), y), f"{pair} teacher", progress)

    def distil(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z_t = teacher(x)
        return kd_loss(student(x), z_t, y, train["T"], train["alpha"])

    if pair == "cnn":  # distilled by kdviz.distill, its weights kept every few epochs for the demo run's history
        torch.manual_seed(SEED + 1)
        student = build(settings["student"]["kind"], settings["student"]["kwargs"])
        history = distill_with_checkpoints(teacher, student, train, epochs=epochs, progress=progress)
        return teacher, student, history
    fit(student, _epochs(digits.x_train, digits.y_train, epochs, train["batch_size"], SEED + 1), steps, train["lr"],
         distil, f"{pair} student (KD)", progress)
    return teacher, student, None


def train_char_lm_pair(
    settings: dict[str, Any], vocab: list[str], fast: bool = False, progress: bool = True
) -> tuple[nn.Module, nn.Module]:
    """Teacher by next-character CE, then student by token-level KD, on the training part of the corpus."""
    train_text, _ = demo_data.split_corpus(demo_data.corpus_text())
    ids = demo_data.encode(train_text, vocab)
    train = settings["train"]
    steps = 5 if fast else train["steps"]

    def windows(seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            starts = torch.randint(0, len(ids) - demo_data.SEQ_LEN - 1, (train["batch_size"],), generator=generator)
            chunk = torch.stack([ids[s : s + demo_data.SEQ_LEN + 1] for s in starts.tolist()])
            yield chunk[:, :-1], chunk[:, 1:]

    torch.manual_seed(SEED)
    kwargs = {"vocab_size": len(vocab)}
    teacher = build("char_lm", {**settings["teacher"]["kwargs"], **kwargs})
    student = build("char_lm", {**settings["student"]["kwargs"], **kwargs})
    flat = lambda z: z.reshape(-1, z.shape[-1])  # noqa: E731
    fit(teacher, windows(SEED), steps, train["lr"],
         lambda x, y: F.cross_entropy(flat(teacher(x).logits), y.reshape(-1)), "charlm teacher", progress)

    def distil(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z_t = teacher(x).logits
        return kd_loss(flat(student(x).logits), flat(z_t), y.reshape(-1), train["T"], train["alpha"])

    fit(student, windows(SEED + 1), steps, train["lr"], distil, "charlm student (KD)", progress)
    return teacher, student


def retrain(out_dir: Path, *, fast: bool = False, progress: bool = True, pairs: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the demo pairs (all, or those ``pairs`` names) and write their safetensors (and the cross-tokenizer
    pair's tokenizers) and ``demo.json`` into ``out_dir``; pairs not retrained keep their entry of an existing
    ``demo.json`` there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    vocab = sorted(set(demo_data.corpus_text()))
    existing = out_dir / "demo.json"
    manifest: dict[str, Any] = {"seed": SEED, "vocab": vocab, "pairs": {}}
    if existing.is_file() and pairs is not None:
        manifest["pairs"] = json.loads(existing.read_text(encoding="utf-8"))["pairs"]
    for pair, settings in PAIRS.items():
        if pairs is not None and pair not in pairs:
            continue
        entry = json.loads(json.dumps(settings))
        if pair == "crosslm":
            teacher, student, tokenizers = train_cross_tokenizer_pair(settings, SEED, fast, progress)
            for role, tokenizer in tokenizers.items():
                entry[role]["kwargs"]["vocab_size"] = tokenizer.get_vocab_size()
                entry[role]["tokenizer"] = f"{pair}_{role}.tokenizer.json"
                tokenizer.save(str(out_dir / entry[role]["tokenizer"]))
        elif pair == "charlm":
            teacher, student = train_char_lm_pair(settings, vocab, fast, progress)
        else:
            teacher, student, history = train_image_pair(pair, settings, fast, progress)
            if history is not None:
                snapshots, weights, training = history
                entry["history"] = {"file": save_history(out_dir, weights), "snapshots": snapshots, "training": training}
        for role, model in (("teacher", teacher), ("student", student)):
            if pair == "charlm":
                entry[role]["kwargs"]["vocab_size"] = len(vocab)
            entry[role]["file"] = f"{pair}_{role}.safetensors"
            # float16 keeps the LM teachers well under 1 MB; the image models are tiny either way.
            save_model(model, out_dir / entry[role]["file"], torch.float16 if pair.endswith("lm") else torch.float32)
        manifest["pairs"][pair] = entry
    existing.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest
