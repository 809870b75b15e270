"""Vision pairs at real sizes (issue 18's table): run size per image and capture time against the bare forward
pass of both models, and what explaining them costs in time and memory.

Pairs, built from configs with random weights (nothing is downloaded), on 64 random 224² images in batches of 16:
- timm ViT-S/16 (22M, 12 layers × 6 heads) → ViT-Ti/16 (5.7M, 12 × 3), features of every block;
- torchvision ResNet-50 (26M) → ResNet-18 (12M), features of the four stages.

Capture uses the defaults (an attention digest for every sample, exact maps for the first samples that fit 512 KB
each, token features pooled). Capture and the bare forward are timed interleaved in one process.

Attribution: integrated gradients (32 steps) of the ResNet pair on 4 images, each setting in a fresh process, its
peak resident memory sampled every 0.5 ms: the default bound (``max_memory="2GB"``) against no bound
(``max_memory=None``, the behaviour before the bound). Goal: peak < 4 GB. Printed beside it: the graph bytes of one
sample as measured by kdviz, and the peak rise ÷ (path points per pass × those bytes): the overhead
`kdviz.metrics.graph_memory.OVERHEAD` must cover.

    python benchmarks/vision_capture.py [--repeats 2] [--images 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, median, run_size, time_interleaved, write_result

import kdviz
from kdviz.batching import iter_batches

BATCH = 16
SIDE = 224


def vit_pair():
    import timm

    torch.manual_seed(0)
    teacher = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    student = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    return "timm ViT-S/16 → ViT-Ti/16", teacher, student, ["blocks.*"]


def resnet_pair():
    import torchvision

    torch.manual_seed(0)
    teacher = torchvision.models.resnet50(weights=None).eval()
    student = torchvision.models.resnet18(weights=None).eval()
    return "torchvision ResNet-50 → ResNet-18", teacher, student, ["layer1", "layer2", "layer3", "layer4"]


PAIRS = {"vit": vit_pair, "resnet": resnet_pair}


def images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def forward_both(teacher, student, x) -> None:
    with torch.inference_mode():
        for batch in iter_batches(x, BATCH):
            teacher(batch.inputs)
            student(batch.inputs)


def attribution_probe(max_memory: str) -> dict:
    """In a fresh process: IG of the ResNet pair on 4 images; peak resident memory (absolute and its rise)."""
    _, teacher, student, _ = resnet_pair()
    x = images(4)
    bound = None if max_memory == "none" else max_memory
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as peak:
        started = time.perf_counter()
        run = kdviz.attribute(teacher, student, x, path=Path(tmp) / "a.kdviz", methods=["integrated_gradients"],
                              n_steps=32, max_memory=bound, progress=False)
        seconds = time.perf_counter() - started
        attrs = run.attribution("integrated_gradients").attrs
    return {"peak_rss_mb": round(peak.peak / 2**20), "peak_rise_mb": round(peak.rise / 2**20), "seconds": round(seconds, 1),
            "graph_bytes_per_sample": attrs["graph_bytes_per_sample"], "samples_per_pass": attrs["samples_per_pass"],
            "points_per_pass": attrs["points_per_pass"]}


def measure_attribution(max_memory: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--attribution-probe", max_memory], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--attribution-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attribution_probe:
        print(json.dumps(attribution_probe(args.attribution_probe)))
        return
    result: dict = {"images": args.images, "batch_size": BATCH, "side": SIDE, "pairs": {}}
    x = images(args.images)
    for key, build in PAIRS.items():
        label, teacher, student, layers = build()
        with tempfile.TemporaryDirectory() as tmp:
            runs: list[kdviz.Run] = []

            def capture(tmp=tmp, teacher=teacher, student=student, layers=layers, runs=runs) -> None:
                runs.append(kdviz.capture(teacher, student, x, path=Path(tmp) / f"r{len(runs)}.kdviz", layers=layers,
                                          batch_size=BATCH, progress=False))

            times = time_interleaved({"forward": lambda teacher=teacher, student=student: forward_both(teacher, student, x),
                                      "capture": capture}, repeats=args.repeats, warmup=0)
            size = run_size(runs[-1].path)
            exact = len(runs[-1].attention_samples) if runs[-1].teacher.heads else 0
        ratio = median(times["capture"]) / median(times["forward"])
        result["pairs"][key] = {"label": label, "run_bytes": size, "bytes_per_image": size / args.images,
                                "forward_s": round(median(times["forward"]), 2), "capture_s": round(median(times["capture"]), 2),
                                "capture_over_forward": round(ratio, 2), "exact_attention_samples": exact}
        print(f"{label}: {args.images} × {SIDE}²  run {size / 1e6:.1f} MB = {size / args.images / 1e6:.2f} MB/image"
              f"  capture {median(times['capture']):.1f} s ÷ forward {median(times['forward']):.1f} s = {ratio:.2f}×"
              + (f"  (exact attention maps for {exact} images)" if exact else ""), flush=True)
    measured: dict = {}
    for setting in ("2GB", "none"):
        entry = measure_attribution(setting)
        entry["graph_bytes_per_sample"] = entry["graph_bytes_per_sample"] or measured  # not measured without a bound
        measured = entry["graph_bytes_per_sample"]
        points = min(entry["points_per_pass"]["teacher"], 32 * entry["samples_per_pass"]["teacher"])
        per_pass = points * entry["graph_bytes_per_sample"]["teacher"]
        entry["overhead_rise_over_saved"] = round(entry["peak_rise_mb"] * 2**20 / per_pass, 2)
        result[f"attribution_ig_max_memory_{setting}"] = entry
        print(f"ResNet pair, integrated gradients on 4 images, max_memory={setting}: peak RSS {entry['peak_rss_mb']:,} MB "
              f"(rise {entry['peak_rise_mb']:,} MB), {entry['seconds']} s; teacher: "
              f"{entry['graph_bytes_per_sample']['teacher'] / 2**20:.0f} MB of graph per image, "
              f"{entry['samples_per_pass']['teacher']} images × {entry['points_per_pass']['teacher']} points per pass; "
              f"rise ÷ saved bytes of one pass {entry['overhead_rise_over_saved']}", flush=True)
    print(f"goal: peak < 4,096 MB with the default bound: "
          f"{'met' if result['attribution_ig_max_memory_2GB']['peak_rss_mb'] < 4096 else 'NOT met'}")
    print("wrote", write_result("vision_capture", result))


if __name__ == "__main__":
    main()
