"""Build the demo runs from the committed weights (no training): digits CNN (with the student's distillation history,
replayed from its committed checkpoints), digits ViT, character LM, and two language models with different
tokenizers, compared on held-out text and on their own continuations (on-policy vs off-policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdviz.attribute import attribute
from kdviz.capture import capture
from kdviz.demo import data as demo_data
from kdviz.demo.cross_training import held_out_lines
from kdviz.demo.history import record_history
from kdviz.demo.weights import assets_dir, load_pair, load_tokenizers, read_manifest
from kdviz.errors import KdvizError
from kdviz.generation import generate
from kdviz.store import Run
from kdviz.text_capture import capture_text

DEMO_RUNS = ("digits-cnn", "digits-vit", "charlm", "on-policy", "cross-tokenizer")
N_TEXT_SAMPLES = 64
CROSS_TEXTS, CROSS_CHARS = 64, 240  # held-out lines of prose for the cross-tokenizer run, cut at 240 characters
PROMPTS, PROMPT_CHARS, NEW_TOKENS = 24, 40, 24  # the on-policy run: 24 prompts, 24 new tokens from each model


def demo_prompts() -> list[str]:
    """The on-policy run's prompts: the first 40 characters of the cross-tokenizer run's first 24 held-out lines."""
    return [line[:PROMPT_CHARS] for line in held_out_lines(CROSS_TEXTS, CROSS_CHARS)[:PROMPTS]]


# What `build_demo_runs(..., attributions=True)` explains in each run (for the teacher's predicted class / next character).
DEMO_ATTRIBUTIONS = {
    "digits-cnn": {"methods": ["saliency", "integrated_gradients", "grad_cam"], "layers": "layer3"},
    "digits-vit": {"methods": ["saliency", "integrated_gradients", "attention_x_gradient"]},
    "charlm": {"methods": ["integrated_gradients", "attention_x_gradient"]},
}
IMAGE_PAIRS = {"digits-cnn": ("cnn", "CNN", ["layer1", "layer2", "layer3"]), "digits-vit": ("vit", "ViT", ["blocks.*"])}


def demo_pair(name: str) -> tuple[nn.Module, nn.Module, Any]:
    """(teacher, student, data) of one demo run, the data in the order the run was captured from: for
    `kdviz.attribute` (or a capture of your own) on the same samples; for ``cross-tokenizer``, its texts.
    ``on-policy``, its prompts. ``name``: one of `DEMO_RUNS`."""
    if name not in DEMO_RUNS:
        raise KdvizError(f"unknown demo run {name!r}; choose from {list(DEMO_RUNS)}")
    assets = assets_dir()
    if name in ("cross-tokenizer", "on-policy"):
        teacher, student, _ = load_pair("crosslm", assets)
        return teacher, student, held_out_lines(CROSS_TEXTS, CROSS_CHARS) if name == "cross-tokenizer" else demo_prompts()
    if name in IMAGE_PAIRS:
        teacher, student, _ = load_pair(IMAGE_PAIRS[name][0], assets)
        digits = demo_data.load_digits()
        return teacher, student, (digits.x_test, digits.y_test)
    teacher, student, _ = load_pair("charlm", assets)
    _, held_out = demo_data.split_corpus(demo_data.corpus_text())
    ids = demo_data.char_sequences(demo_data.encode(held_out, read_manifest(assets)["vocab"]), N_TEXT_SAMPLES)
    return teacher, student, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def build_demo_runs(out_dir: str | Path, *, progress: bool = True, overwrite: bool = True, attributions: bool = False) -> list[Run]:
    """Capture the demo pairs into ``out_dir/<name>.kdviz`` for each name of `DEMO_RUNS` and return the runs.

    With ``attributions``, also explain both models' predictions in each run that has tokens or images of one model
    (`DEMO_ATTRIBUTIONS`, `kdviz.attribute`; the cross-tokenizer run's tokens are spans of text, not inputs).
    """
    out_dir = Path(out_dir)
    assets = assets_dir()
    manifest = read_manifest(assets)
    digits = demo_data.load_digits()
    runs = []
    for name, (pair, label, layers) in IMAGE_PAIRS.items():
        teacher, student, _ = demo_pair(name)
        entry = manifest["pairs"][pair]
        options = {"layers": layers, "class_names": digits.class_names, "batch_size": 100,
                   "names": (f"{label} teacher", f"{label} student"),
                   "extra_meta": {"demo": pair, "distillation": entry["train"], "data": "scikit-learn digits, held-out 500"}}
        if "history" in entry:  # the CNN: the student's distillation replayed from its checkpoints (`demo.history`)
            runs.append(record_history(out_dir / f"{name}.kdviz", teacher, student, (digits.x_test, digits.y_test), entry,
                                       assets, overwrite=overwrite, progress=progress, **options))
            continue
        runs.append(capture(teacher, student, (digits.x_test, digits.y_test), path=out_dir / f"{name}.kdviz",
                            progress=progress, overwrite=overwrite, device="cpu", **options))
    teacher, student, data = demo_pair("charlm")
    runs.append(
        capture(
            teacher, student, data, path=out_dir / "charlm.kdviz", tokenizer=manifest["vocab"], batch_size=16,
            keep_full_logits=8, progress=progress, overwrite=overwrite, device="cpu",
            names=("GPT-2 char teacher", "GPT-2 char student"),
            extra_meta={"demo": "charlm", "distillation": manifest["pairs"]["charlm"]["train"],
                        "data": "Python's pydoc topics, held-out 10%"},
        )
    )
    tokenizers = load_tokenizers("crosslm", assets)
    teacher, student, prompts = demo_pair("on-policy")
    runs.append(generate(
        teacher, student, prompts, tokenizer=tokenizers["teacher"], student_tokenizer=tokenizers["student"],
        max_new_tokens=NEW_TOKENS, path=out_dir / "on-policy.kdviz", progress=progress, overwrite=overwrite,
        device="cpu", names=("GPT-2 teacher, byte-level BPE", "GPT-2 student, sentencepiece BPE"),
        extra_meta={"demo": "crosslm", "distillation": manifest["pairs"]["crosslm"]["train"],
                    "data": "24 held-out lines of prose, each continued greedily by each model in its own tokenizer"}))
    teacher, student, texts = demo_pair("cross-tokenizer")
    runs.append(capture_text(
        teacher, student, texts, tokenizer=tokenizers["teacher"], student_tokenizer=tokenizers["student"],
        path=out_dir / "cross-tokenizer.kdviz", progress=progress, overwrite=overwrite, device="cpu",
        names=("GPT-2 teacher, byte-level BPE", "GPT-2 student, sentencepiece BPE"),
        extra_meta={"demo": "crosslm", "distillation": manifest["pairs"]["crosslm"]["train"],
                    "data": "Python's pydoc topics, held-out lines of prose"}))
    if attributions:
        runs = [add_demo_attributions(run, progress=progress) if run.name in DEMO_ATTRIBUTIONS else run for run in runs]
    return runs  # each stores the CKA its Features page opens with (kdviz.capture, kdviz.distill)


def add_demo_attributions(run: Run, *, progress: bool = True) -> Run:
    """Explain both models of one demo run (its name says which) with the methods of `DEMO_ATTRIBUTIONS`."""
    teacher, student, data = demo_pair(run.name)
    return attribute(teacher, student, data, run=run, device="cpu", progress=progress, batch_size=100,
                     **DEMO_ATTRIBUTIONS[run.name])
