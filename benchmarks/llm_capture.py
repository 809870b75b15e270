"""LLM capture: a Llama-architecture pair at 1,024 tokens, capture with default settings vs the bare forward passes.

Teacher 8 layers d512 with GQA (8 query heads, 2 key/value heads), student 4 layers d256 (4/1 heads), both built from
configs with the default sdpa attention; vocabularies of 32,000 (Llama 2) and 152,064 (Qwen2). Each case times,
interleaved in one run: the bare forward of both models over the same batches, and ``kdviz.capture`` with its
defaults (per-token statistics, pooled hidden states, ``attentions=False``), writes included. Reported: the ratio,
the run's size per sequence (``du`` of the run), and with ``--memory`` the peak RSS of a capture of N and of 4N
sequences in fresh processes (bounded by one batch, so the two should be close).
Goals (issue 18): ratio ≤ 1.3× at both vocabularies; ≤ 512 KB per 1k-token sequence.

``--long-attention 4096``: one sequence of 4,096 tokens captured with attentions (the digest), against the eager
forward with ``output_attentions`` (every layer's [H, T, T] at once), peak RSS of each in a fresh process.

    python benchmarks/llm_capture.py [--sequences 8] [--repeats 3] [--vocab 32000 152064] [--memory 4] [--device cuda]
                                     [--bfloat16]
    python benchmarks/llm_capture.py --long-attention 4096
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

TOKENS = 1024
BATCH = 4


def llama_pair(vocab: int, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)

    def build(layers: int, width: int, heads: int, kv_heads: int) -> torch.nn.Module:
        config = LlamaConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=kv_heads, intermediate_size=int(width * 2.6875),
                             max_position_embeddings=4096, attn_implementation="sdpa")
        return LlamaForCausalLM(config).to(dtype).eval()

    return build(8, 512, 8, 2), build(4, 256, 4, 1)


def token_batches(vocab: int, sequences: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (sequences, TOKENS), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def measure(vocab: int, sequences: int, repeats: int, device: str, dtype: torch.dtype) -> dict:
    teacher, student = llama_pair(vocab, dtype)
    teacher.to(device)
    student.to(device)
    data = token_batches(vocab, sequences)
    batches = [{k: v[i : i + BATCH].to(device) for k, v in data.items()} for i in range(0, sequences, BATCH)]

    def bare() -> None:
        with torch.inference_mode():
            for inputs in batches:
                for model in (teacher, student):
                    model(**inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    workdir = Path(tempfile.mkdtemp(prefix="kdviz-bench-"))
    written: list[Path] = []

    def capture() -> None:
        written.append(workdir / f"run{len(written)}.kdviz")
        kdviz.capture(teacher, student, data, attentions=False, batch_size=BATCH, path=written[-1], progress=False,
                      device=device)
        if len(written) > 2:  # keep the disk small; deleting is not part of a capture's cost
            shutil.rmtree(written[-3], ignore_errors=True)

    try:
        times = time_interleaved({"bare": bare, "capture": capture}, repeats=repeats)
        size = run_size(written[-1])
        arrays = array_sizes(written[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = median(times["bare"])
    result = {
        "vocab": vocab, "sequences": sequences, "tokens": TOKENS, "batch_size": BATCH, "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "params_m": [round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for m in (teacher, student)],
        "seconds_median": {k: median(v) for k, v in times.items()}, "seconds_all": times,
        "ratio": median(times["capture"]) / base, "ratio_best": min(times["capture"]) / min(times["bare"]),
        "run_bytes": size, "kb_per_sequence": size / sequences / 1024, "arrays": arrays,
    }
    print(f"Llama-style 8L d512 GQA 8/2 → 4L d256, vocab {vocab:,}, {sequences} × {TOKENS} tokens on {device} "
          f"({result['dtype']})")
    print(f"  bare forward {base:7.2f} s   capture {median(times['capture']):7.2f} s   ratio {result['ratio']:.2f}× "
          f"[best-of {result['ratio_best']:.2f}×]  (goal ≤ 1.30×)")
    print(f"  run size {size / 1e6:.2f} MB = {result['kb_per_sequence']:.0f} KB per sequence  (goal ≤ 512 KB); largest: "
          + ", ".join(f"{key} {value / sequences / 1024:.0f} KB" for key, value in list(arrays.items())[:4]))
    return result


def peak_rss(vocab: int, sequences: int) -> tuple[float, float]:
    """(peak RSS, RSS before capturing) in MB of a fresh process that builds the pair and captures ``sequences``
    sequences. VmHWM is read from /proc: ru_maxrss would carry this parent's peak over into the child."""
    code = f"""
import sys, tempfile
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from llm_capture import llama_pair, token_batches, BATCH
import kdviz
def status(field):
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(field))
teacher, student = llama_pair({vocab})
data = token_batches({vocab}, {sequences})
before = status("VmRSS:")
kdviz.capture(teacher, student, data, attentions=False, batch_size=BATCH, path=tempfile.mkdtemp() + "/r.kdviz",
              progress=False, device="cpu")
print(status("VmHWM:"), before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def long_attention_rss(tokens: int, what: str) -> dict:
    """In a fresh process, one sequence of ``tokens`` tokens through the pair (vocab 32,000): the peak RSS and seconds
    of ``what``: "eager" (both models' eager forward with output_attentions, every layer's [H, T, T] returned at
    once: what a tool that collects attentions holds) or "capture" (kdviz.capture with attentions, the default
    digest: layers stream into it as the models compute them)."""
    code = f"""
import sys, tempfile, time, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from llm_capture import llama_pair
import kdviz
def status(field):
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(field))
teacher, student = llama_pair(32000)
ids = torch.randint(0, 32000, (1, {tokens}), generator=torch.Generator().manual_seed(1))
data = {{"input_ids": ids, "attention_mask": torch.ones_like(ids)}}
before = status("VmRSS:")
start = time.perf_counter()
if {what!r} == "eager":
    with torch.inference_mode():
        for model in (teacher, student):
            model.set_attn_implementation("eager")
            out = model(**data, output_attentions=True)
            del out
else:
    kdviz.capture(teacher, student, data, batch_size=1, path=tempfile.mkdtemp() + "/r.kdviz", progress=False, device="cpu")
print(status("VmHWM:"), before, time.perf_counter() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"peak_rss_mb": float(out[0]), "rss_before_mb": float(out[1]), "seconds": float(out[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 152064])
    parser.add_argument("--memory", type=int, default=0, metavar="N",
                        help="also measure the peak RSS of captures of N and 4N sequences in fresh processes")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-RSS measurement (with --memory N)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bfloat16", action="store_true", help="bfloat16 weights (the GPU figure)")
    parser.add_argument("--long-attention", type=int, default=0, metavar="T",
                        help="only: peak RSS of one T-token sequence captured with attentions, against the eager "
                             "forward with output_attentions (vocab 32,000)")
    args = parser.parse_args()
    if args.long_attention:
        eager, ours = (long_attention_rss(args.long_attention, what) for what in ("eager", "capture"))
        print(f"one {args.long_attention:,}-token sequence, attentions of every layer (teacher 8L × 8 heads, student 4L × 4):")
        for name, entry in (("eager forward with output_attentions", eager), ("kdviz.capture (attention digest)", ours)):
            print(f"  {name:38s} peak RSS {entry['peak_rss_mb']:7,.0f} MB (models {entry['rss_before_mb']:,.0f} MB), "
                  f"{entry['seconds']:.1f} s")
        rise = (ours["peak_rss_mb"] - ours["rss_before_mb"]) / (eager["peak_rss_mb"] - eager["rss_before_mb"])
        print(f"  capture's rise ÷ eager's rise: {rise:.2f}")
        print("wrote", write_result("llm_long_attention", {"tokens": args.long_attention, "eager": eager, "capture": ours,
                                                            "rise_ratio": rise}))
        return
    dtype = torch.bfloat16 if args.bfloat16 else torch.float32
    cases = [] if args.memory_only else [measure(vocab, args.sequences, args.repeats, args.device, dtype)
                                         for vocab in args.vocab]
    memory = []
    if args.memory:
        for vocab in args.vocab:
            (small, base_small), (large, base_large) = peak_rss(vocab, args.memory), peak_rss(vocab, 4 * args.memory)
            memory.append({"vocab": vocab, "sequences": [args.memory, 4 * args.memory], "peak_rss_mb": [small, large],
                           "rss_before_capture_mb": [base_small, base_large]})
            print(f"  vocab {vocab:,}: peak RSS {small:.0f} MB at {args.memory} sequences, {large:.0f} MB at "
                  f"{4 * args.memory} (ratio {large / small:.2f}; bounded by one batch when ≈ 1); models and data "
                  f"{base_small:.0f} MB before capturing")
    path = write_result("llm_capture_memory" if args.memory_only else "llm_capture",
                        {"repeats": args.repeats, "cases": cases, "memory": memory})
    print(f"wrote {path}")
    print(json.dumps({c["vocab"]: round(c["ratio"], 2) for c in cases}))


if __name__ == "__main__":
    main()
