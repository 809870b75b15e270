"""What explaining both models costs: `kdviz.attribute` for 256 samples against one forward pass of both models over
the same samples, for Saliency and Integrated Gradients (n_steps=32), and IG's peak memory with and without
``internal_batch_size``.

Pairs: the demo ViT (4L×4H → 2L×2H, 17 tokens) on 256 digits, and an HF BERT from config (4L d256 → 2L d128) on
256 sequences of 128 tokens. Timed interleaved in one process (forward, saliency, IG), each attribution written into
a run as `kdviz.attribute` does. Peak memory: one batch of 32 samples through IG in a fresh subprocess, the rise of
its resident memory sampled every 0.5 ms (CPU; on CUDA, torch.cuda.max_memory_allocated), all 32 × 32 path points in one pass
against `kdviz.attribute`'s default of 256 points per pass.

    python benchmarks/attribution_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, median, time_interleaved, write_result

import kdviz
from kdviz.attribute import AUTO_PATH_POINTS
from kdviz.batching import iter_batches, to_device
from kdviz.capture import resolve_device

SAMPLES = 256
BATCH = 32
STEPS = 32


def vit_case():
    from kdviz.demo.build import demo_pair

    teacher, student, (x, y) = demo_pair("digits-vit")
    x = x.repeat(2, 1, 1, 1)[:SAMPLES]
    y = y.repeat(2)[:SAMPLES]
    return "demo ViT (4L×4H → 2L×2H, 17 tokens)", teacher, student, (x, y)


def bert_case():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    common = {"vocab_size": 8000, "max_position_embeddings": 128, "num_labels": 4, "attn_implementation": "eager"}
    teacher = BertForSequenceClassification(
        BertConfig(num_hidden_layers=4, num_attention_heads=4, hidden_size=256, intermediate_size=1024, **common)).eval()
    student = BertForSequenceClassification(
        BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=128, intermediate_size=512, **common)).eval()
    ids = torch.randint(1, 8000, (SAMPLES, 128), generator=torch.Generator().manual_seed(0))
    return "HF BERT (4L d256 → 2L d128, 128 tokens)", teacher, student, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


CASES = {"vit": vit_case, "bert": bert_case}


def forward_both(teacher: torch.nn.Module, student: torch.nn.Module, data, device: torch.device) -> None:
    """The baseline: one inference forward pass of both models over the samples, in batches."""
    with torch.inference_mode():
        for batch in iter_batches(data, BATCH):
            inputs = to_device(batch.inputs, device)
            for model in (teacher, student):
                model(**inputs) if isinstance(inputs, dict) else model(inputs)


def memory_probe(case: str, internal: int | None) -> dict:
    """Run in a fresh process: IG on one batch of one model (the teacher); peak memory rise in MB."""
    from kdviz.adapters.probe import ModelProbe
    from kdviz.attribute import model_call
    from kdviz.metrics import attribution as am

    _, teacher, _, data = CASES[case]()
    device = resolve_device(None)
    batch = next(iter_batches(data, BATCH))
    with ModelProbe(teacher, "teacher", layers=[], attentions=False, device=device, spatial_p=None) as probe:
        inputs = to_device(batch.inputs, device)
        call = model_call(probe, inputs)
        target = torch.zeros(batch.size, dtype=torch.long, device=device)
        with torch.no_grad():
            call.forward(call.main, *call.extra)  # warm up, so the baseline holds the model's own buffers
        attribute = am.embedding_attribution if call.tokens else am.input_attribution
        args = (call.embedding,) if call.tokens else ()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with PeakRSS() as peak:
            attribute("integrated_gradients", call.forward, call.main, target, *args, extra=call.extra, n_steps=STEPS,
                      internal_batch_size=internal)
        rise = (torch.cuda.max_memory_allocated() - before) / 2**20 if device.type == "cuda" else peak.rise / 2**20
    return {"peak_rise_mb": round(rise, 1), "device": str(device)}


def measure_memory(case: str, internal: int | None) -> dict:
    command = [sys.executable, __file__, "--memory-probe", case, "--internal", str(internal or 0)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-probe", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--internal", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.internal or None)))
        return
    device = resolve_device(None)
    result: dict = {"samples": SAMPLES, "batch_size": BATCH, "n_steps": STEPS, "device": str(device), "cases": {}}
    for case, build in CASES.items():
        label, teacher, student, data = build()
        with tempfile.TemporaryDirectory() as tmp:
            run = kdviz.capture(teacher, student, data, path=Path(tmp) / "r.kdviz", layers=[], attentions=False,
                                batch_size=BATCH, progress=False)

            def attribute(method: str, run=run, teacher=teacher, student=student, data=data) -> None:
                kdviz.attribute(teacher, student, data, run=run, methods=[method], n_steps=STEPS, batch_size=BATCH,
                                progress=False)

            times = time_interleaved({
                "forward": lambda teacher=teacher, student=student, data=data: forward_both(teacher, student, data, device),
                "saliency": lambda: attribute("saliency"),
                "integrated_gradients": lambda: attribute("integrated_gradients"),
            }, repeats=args.repeats)
        forward = median(times["forward"])
        entry = {"label": label, "forward_s": round(forward, 3)}
        for method in ("saliency", "integrated_gradients"):
            entry[f"{method}_s"] = round(median(times[method]), 3)
            entry[f"{method}_ratio"] = round(median(times[method]) / forward, 1)
        entry["ig_memory_all_points_at_once"] = measure_memory(case, None)
        entry["ig_memory_internal_batch"] = {**measure_memory(case, AUTO_PATH_POINTS), "internal_batch_size": AUTO_PATH_POINTS}
        result["cases"][case] = entry
        print(f"{label}: forward of both models over {SAMPLES} samples {forward:.3f} s")
        for method in ("saliency", "integrated_gradients"):
            print(f"  {method:<22} {entry[f'{method}_s']:8.2f} s  = {entry[f'{method}_ratio']:6.1f}× the forward pass")
        print(f"  IG peak memory rise, one batch of {BATCH}: all {BATCH * STEPS} path points at once "
              f"{entry['ig_memory_all_points_at_once']['peak_rise_mb']} MB, "
              f"{AUTO_PATH_POINTS} per pass {entry['ig_memory_internal_batch']['peak_rise_mb']} MB")
    path = write_result("attribution_cost", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
