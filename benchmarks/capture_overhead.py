"""Capture overhead: full capture (logits, every attention, 4 feature layers per model) vs the bare forward passes.

Two ratios per model pair, each against the bare forward passes of both models over the same batches, timed
interleaved in one run: hooks only (capture kept in memory, nothing written) and with store writes.
Goals: hooks only ≤ 1.10×, with writes ≤ 1.5×.

    python benchmarks/capture_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, time_interleaved, write_result

import kdviz
from kdviz.adapters.probe import ModelProbe
from kdviz.batching import iter_batches
from kdviz.capture import CaptureSession


def vit_case():
    from kdviz.demo.data import load_digits
    from kdviz.demo.weights import load_pair

    teacher, student, _ = load_pair("vit")
    digits = load_digits()
    x = digits.x_train.repeat(3, 1, 1, 1)[:3840]  # 3,840 digits, 17 tokens
    layers = {"teacher": ["blocks.*"], "student": ["patch_embed", "blocks.*", "norm"]}
    return "demo ViT (4L×4H → 2L×2H, 17 tokens)", teacher, student, x, layers, 256


def bert_case():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    common = {"vocab_size": 8000, "max_position_embeddings": 128, "num_labels": 4, "attn_implementation": "eager"}
    teacher = BertForSequenceClassification(
        BertConfig(num_hidden_layers=4, num_attention_heads=4, hidden_size=256, intermediate_size=1024, **common))
    student = BertForSequenceClassification(
        BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=128, intermediate_size=512, **common))
    ids = torch.randint(1, 8000, (512, 128), generator=torch.Generator().manual_seed(0))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    layers = {"teacher": ["bert.encoder.layer.*"], "student": ["bert.embeddings", "bert.encoder.layer.*", "bert.pooler"]}
    return "HF BERT (4L×4H d256 → 2L×2H d128, 128 tokens)", teacher, student, data, layers, 32


def measure(label, teacher, student, data, layers, batch_size, repeats):
    teacher.eval()
    student.eval()
    device = torch.device("cpu")
    batches = [b.inputs for b in iter_batches(data, batch_size)]
    is_hf = hasattr(teacher, "config")

    def bare() -> None:
        with torch.inference_mode():
            for inputs in batches:
                for model in (teacher, student):
                    model(**inputs) if isinstance(inputs, dict) else model(inputs)

    def hooks_only() -> None:
        probes = tuple(
            ModelProbe(m, role, layers=layers[role], attentions=True, device=device)
            for m, role in ((teacher, "teacher"), (student, "student"))
        )
        for _records in CaptureSession(probes, data, batch_size=batch_size, progress=False):
            pass

    workdir = Path(tempfile.mkdtemp(prefix="kdviz-bench-"))
    written: list[Path] = []

    def with_writes() -> None:
        # a fresh path each time: deleting the previous run is not part of a capture's cost
        written.append(workdir / f"run{len(written)}.kdviz")
        kdviz.capture(teacher, student, data, layers=layers, batch_size=batch_size, path=written[-1],
                      progress=False, device="cpu")

    try:
        times = time_interleaved({"bare": bare, "hooks_only": hooks_only, "with_writes": with_writes}, repeats=repeats)
        run = kdviz.Run.open(written[-1])
        stored = sum(f.stat().st_size for f in written[-1].rglob("*") if f.is_file())
        n_features = (len(run.teacher.feature_names), len(run.student.feature_names))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = median(times["bare"])
    result = {
        "case": label,
        "samples": run.n_samples,
        "batch_size": batch_size,
        "feature_layers": n_features,
        "attention_layers": (len(run.teacher.heads), len(run.student.heads)),
        "hf_attention": "eager" if is_hf else "fused SDPA (recomputed from qkv by the adapter)",
        "seconds_median": {k: median(v) for k, v in times.items()},
        "seconds_all": times,
        "ratio_hooks_only": median(times["hooks_only"]) / base,
        "ratio_with_writes": median(times["with_writes"]) / base,
        "ratio_hooks_only_best": min(times["hooks_only"]) / min(times["bare"]),
        "ratio_with_writes_best": min(times["with_writes"]) / min(times["bare"]),
        "stored_mb": stored / 1e6,
    }
    print(f"{label}: {run.n_samples} samples, batch {batch_size}, features {n_features}, stored {stored / 1e6:.1f} MB")
    print(f"  bare forward      {base:7.3f} s   (medians of {repeats} interleaved repeats; best-of ratios in brackets)")
    for key, label_text, goal in (("hooks_only", "hooks only       ", 1.10), ("with_writes", "with store writes", 1.50)):
        print(f"  {label_text} {median(times[key]):7.3f} s   ratio {result[f'ratio_{key}']:.2f}× "
              f"[{result[f'ratio_{key}_best']:.2f}×]  (goal ≤ {goal:.2f}×)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = [measure(*case(), args.repeats) for case in (vit_case, bert_case)]
    path = write_result("capture_overhead", {"repeats": args.repeats, "cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
