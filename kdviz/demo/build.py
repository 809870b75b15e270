"""Build the demo runs from the committed weights (no training): digits CNN, digits ViT, character LM."""

from __future__ import annotations

from pathlib import Path

import torch

from kdviz.capture import capture
from kdviz.demo import data as demo_data
from kdviz.demo.weights import assets_dir, load_pair, read_manifest
from kdviz.store import Run

DEMO_RUNS = ("digits-cnn", "digits-vit", "charlm")
N_TEXT_SAMPLES = 64


def build_demo_runs(out_dir: str | Path, *, progress: bool = True, overwrite: bool = True) -> list[Run]:
    """Capture the three demo pairs into ``out_dir/{digits-cnn,digits-vit,charlm}.kdviz`` and return the runs."""
    out_dir = Path(out_dir)
    assets = assets_dir()
    manifest = read_manifest(assets)
    digits = demo_data.load_digits()
    runs = []
    image_pairs = (("cnn", "digits-cnn", "CNN", ["layer1", "layer2", "layer3"]), ("vit", "digits-vit", "ViT", ["blocks.*"]))
    for pair, name, label, layers in image_pairs:
        teacher, student, entry = load_pair(pair, assets)
        runs.append(
            capture(
                teacher, student, (digits.x_test, digits.y_test), path=out_dir / f"{name}.kdviz", layers=layers,
                class_names=digits.class_names, batch_size=100, progress=progress, overwrite=overwrite, device="cpu",
                names=(f"{label} teacher", f"{label} student"),
                extra_meta={"demo": pair, "distillation": entry["train"], "data": "scikit-learn digits, held-out 500"},
            )
        )
    teacher, student, entry = load_pair("charlm", assets)
    vocab = manifest["vocab"]
    _, held_out = demo_data.split_corpus(demo_data.corpus_text())
    ids = demo_data.char_sequences(demo_data.encode(held_out, vocab), N_TEXT_SAMPLES)
    runs.append(
        capture(
            teacher, student, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, path=out_dir / "charlm.kdviz",
            tokenizer=vocab, batch_size=16,
            keep_full_logits=8, progress=progress, overwrite=overwrite, device="cpu",
            names=("GPT-2 char teacher", "GPT-2 char student"),
            extra_meta={"demo": "charlm", "distillation": entry["train"], "data": "Python's pydoc topics, held-out 10%"},
        )
    )
    return runs
