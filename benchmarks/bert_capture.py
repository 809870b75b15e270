"""BERT-base → DistilBERT at real shapes: run size per sample and capture time ÷ the bare forward of both models.

Teacher BERT-base (12 layers, d768, 12 heads, vocabulary 30,522: 110M parameters), student DistilBERT (6 layers,
d768, 12 heads: 67M), built from configs with random weights and their default (sdpa) attention. Each case times,
interleaved in one run, the bare forward of both models over the same batches and ``kdviz.capture`` with its
defaults (attentions on, hidden states pooled, ``attention_samples="auto"``), writes included, and the forward
capture has to run (eager attention returning every layer's probabilities). Reported: the ratios,
the run's size per sample (the bytes of its files) with the largest arrays, and which samples kept exact maps.
Goal (issue 18): ≤ 1 MB per sample at 512 tokens (137 MB on main before the attention digest).
With ``--memory``, the peak RSS of a capture and of the eager forward with attentions of the same batches, each in a
fresh process (VmHWM): after its first batch a capture streams each attention layer into the digest.

    python benchmarks/bert_capture.py [--cases 64x128 16x512] [--repeats 1] [--batch 16] [--memory]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import array_sizes, median, run_size, time_interleaved, write_result

import kdviz

MB = 1024 * 1024


def bert_pair(tokens: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(max_position_embeddings=max(512, tokens), num_labels=2))
    student = DistilBertForSequenceClassification(DistilBertConfig(max_position_embeddings=max(512, tokens), n_labels=2))
    return teacher.eval(), student.eval()


def measure(samples: int, tokens: int, repeats: int, batch: int) -> dict:
    teacher, student = bert_pair(tokens)
    ids = torch.randint(1000, 30000, (samples, tokens), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1::2, tokens * 3 // 4:] = 0  # every other sample is a quarter padding, as real batches are
    data = {"input_ids": ids, "attention_mask": mask}
    batches = [{k: v[i : i + batch] for k, v in data.items()} for i in range(0, samples, batch)]

    def bare() -> None:
        with torch.inference_mode():
            for inputs in batches:
                for model in (teacher, student):
                    model(**inputs)

    def eager() -> None:  # what capture has to run: eager attention that returns every layer's probabilities
        for model in (teacher, student):
            model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                for inputs in batches:
                    for model in (teacher, student):
                        model(**inputs, output_attentions=True)
        finally:
            for model in (teacher, student):
                model.set_attn_implementation("sdpa")

    workdir = Path(tempfile.mkdtemp(prefix="kdviz-bench-"))
    written: list[Path] = []

    def capture() -> None:
        written.append(workdir / f"run{len(written)}.kdviz")
        kdviz.capture(teacher, student, data, batch_size=batch, path=written[-1], progress=False, device="cpu")
        if len(written) > 2:  # keep the disk small; deleting is not part of a capture's cost
            shutil.rmtree(written[-3], ignore_errors=True)

    try:
        times = time_interleaved({"bare": bare, "eager": eager, "capture": capture}, repeats=repeats, warmup=0)
        size, arrays = run_size(written[-1]), array_sizes(written[-1])
        kept = kdviz.Run.open(written[-1]).attention_samples
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = median(times["bare"])
    groups: dict[str, int] = {}
    for key, value in arrays.items():  # per kind of array: exact maps, digest parts, features, the rest
        kind = key.split("/")[1] if key.startswith(("teacher/", "student/", "pair/")) else key.split("/")[0]
        groups[kind] = groups.get(kind, 0) + value
    result = {
        "samples": samples, "tokens": tokens, "batch_size": batch,
        "params_m": [round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for m in (teacher, student)],
        "seconds_median": {k: median(v) for k, v in times.items()}, "seconds_all": times,
        "ratio": median(times["capture"]) / base, "ratio_to_eager": median(times["capture"]) / median(times["eager"]),
        "run_bytes": size, "mb_per_sample": size / samples / MB,
        "exact_samples": kept, "bytes_by_kind": dict(sorted(groups.items(), key=lambda item: -item[1])),
    }
    print(f"BERT-base → DistilBERT, {samples} × {tokens} tokens (batch {batch}), exact maps kept for {len(kept)} samples")
    print(f"  bare forward (sdpa) {base:7.1f} s   eager with attentions {median(times['eager']):7.1f} s   capture "
          f"{median(times['capture']):7.1f} s   ratio {result['ratio']:.2f}× ({result['ratio_to_eager']:.2f}× the eager forward)")
    print(f"  run size {size / MB:.1f} MB = {result['mb_per_sample']:.3f} MB per sample (goal ≤ 1 MB at 512 tokens); by kind: "
          + ", ".join(f"{kind} {value / samples / 1024:.0f} KB" for kind, value in list(groups.items())[:6]))
    return result


def peak_rss(samples: int, tokens: int, batch: int, what: str) -> float:
    """Peak RSS (MB) of a fresh process that builds the pair and runs ``what`` (capture or eager) on the data."""
    code = f"""
import sys, tempfile, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from bert_capture import bert_pair
import kdviz
teacher, student = bert_pair({tokens})
ids = torch.randint(1000, 30000, ({samples}, {tokens}), generator=torch.Generator().manual_seed(1))
data = {{"input_ids": ids, "attention_mask": torch.ones_like(ids)}}
if {what!r} == "capture":
    kdviz.capture(teacher, student, data, batch_size={batch}, path=tempfile.mkdtemp() + "/r.kdviz", progress=False)
else:
    for model in (teacher, student):
        model.set_attn_implementation("eager")
    with torch.inference_mode():
        for i in range(0, {samples}, {batch}):
            for model in (teacher, student):
                model(**{{k: v[i:i + {batch}] for k, v in data.items()}}, output_attentions=True)
print(next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["64x128", "16x512"], help="SAMPLESxTOKENS")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--memory", action="store_true", help="also the peak RSS of capture and eager forward")
    args = parser.parse_args()
    cases = []
    for case in args.cases:
        samples, tokens = (int(v) for v in case.lower().split("x"))
        cases.append(measure(samples, tokens, args.repeats, args.batch))
        if args.memory:
            peaks = {what: peak_rss(samples, tokens, args.batch, what) for what in ("eager", "capture")}
            cases[-1]["peak_rss_mb"] = peaks
            print(f"  peak RSS: eager forward with attentions {peaks['eager']:.0f} MB, capture {peaks['capture']:.0f} MB")
    path = write_result("bert_capture", {"repeats": args.repeats, "cases": cases})
    print(f"wrote {path}")
    print(json.dumps({f"{c['samples']}x{c['tokens']}": {"mb_per_sample": round(c["mb_per_sample"], 3),
                                                        "ratio": round(c["ratio"], 2),
                                                        "ratio_to_eager": round(c["ratio_to_eager"], 2)} for c in cases}))


if __name__ == "__main__":
    main()
