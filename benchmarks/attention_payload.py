"""What the attention views send to the browser, against the usual "dump the whole tensor as JSON lists" viewer.

Models: BERT from config with random weights, teacher 12 layers × 12 heads, student 6 layers × 12 heads,
512 tokens, captured with kdviz.capture into a temporary run. Measured in one process:
- the bytes of the figure JSON (``fig.to_json()``, as Plotly/Panel ship it) for one pair view and for the head grid;
- the baseline: the bytes of ``json.dumps(tensor.tolist())`` for the whole [L, H, T, T] attention of one sample,
  teacher and student (serialised layer by layer and summed, so memory stays bounded; the byte count is the same);
- the server-side time to switch the selected head: read the slices, build the pair view, serialise it.
Goals (issue 4): pair view ≤ 1 MB; head grid ≤ 1 MB; head switch < 200 ms.

    python benchmarks/attention_payload.py [--samples 2] [--tokens 512]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result

import kdviz
from kdviz.readers.attention import AttentionData
from kdviz.views import attention as views

MB = 1_000_000


def bert(layers: int, heads: int, hidden: int, tokens: int) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=hidden, intermediate_size=2 * hidden,
                        vocab_size=1000, max_position_embeddings=tokens, num_labels=2, attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def baseline_bytes(run: kdviz.Run, sample: int) -> int:
    """Bytes of the nested-list JSON of every layer's [H, T, T] for both models (one JSON array of layers)."""
    total = 0
    for side in (run.teacher, run.student):
        layers = len(side.attention_layers)
        total += 2 + (layers - 1)  # "[" "]" and the commas between layers
        for layer in range(layers):
            total += len(json.dumps(side.attention(layer)[sample].astype(np.float32).tolist()))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher, student = bert(12, 12, 384, args.tokens), bert(6, 12, 192, args.tokens)
    ids = torch.randint(5, 1000, (args.samples, args.tokens))
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": mask}, path=Path(tmp) / "bert.kdviz",
                            batch_size=1, progress=False, layers=[])
        capture_s = time.perf_counter() - start
        data = AttentionData(run, max_samples=args.samples)
        pair_json = views.pair_view(data, (11, 0), (5, 0), 0).to_json()
        grid_json = views.head_grid(data, 0, "entropy").to_json()
        window_json = views.pair_view(data, (11, 0), (5, 0), 0, window=(0, 128)).to_json()
        start = time.perf_counter()
        baseline = baseline_bytes(run, 0)
        baseline_s = time.perf_counter() - start

        switches = []
        for k in range(args.repeats):
            fresh = AttentionData(run, max_samples=args.samples)  # nothing memoised: a cold head switch
            t0 = time.perf_counter()
            views.pair_view(fresh, (k % 12, (3 * k) % 12), (k % 6, k % 12), k % args.samples).to_json()
            switches.append(time.perf_counter() - t0)
        grid_times = []
        for k in range(3):
            t0 = time.perf_counter()
            views.head_grid(AttentionData(run, max_samples=args.samples), k % args.samples, "entropy").to_json()
            grid_times.append(time.perf_counter() - t0)

    result = {
        "setup": {"teacher": "BERT 12L×12H (hidden 384)", "student": "BERT 6L×12H (hidden 192)", "tokens": args.tokens,
                  "samples": args.samples, "capture_s": round(capture_s, 2)},
        "baseline_json_bytes": baseline, "baseline_serialise_s": round(baseline_s, 2),
        "pair_view_bytes": len(pair_json), "pair_view_window128_bytes": len(window_json), "head_grid_bytes": len(grid_json),
        "pair_view_ratio": round(baseline / len(pair_json), 1), "head_grid_ratio": round(baseline / len(grid_json), 1),
        "head_switch_ms_median": round(1000 * median(switches), 1), "head_switch_ms_max": round(1000 * max(switches), 1),
        "head_grid_build_ms_median": round(1000 * median(grid_times), 1),
        "goals": {"pair_view_bytes": MB, "head_grid_bytes": MB, "head_switch_ms": 200},
    }
    result["goals_met"] = {"pair_view": result["pair_view_bytes"] <= MB, "head_grid": result["head_grid_bytes"] <= MB,
                           "head_switch": result["head_switch_ms_median"] < 200}
    path = write_result("attention_payload", result)
    print(f"baseline (whole tensor as JSON lists, teacher + student, 1 sample): {baseline / MB:8.1f} MB "
          f"({baseline_s:.1f} s to serialise)")
    print(f"pair view:               {len(pair_json) / MB:8.3f} MB  ({result['pair_view_ratio']}× smaller)   goal ≤ 1 MB")
    print(f"pair view, 128-token window: {len(window_json) / MB:.3f} MB")
    print(f"head grid:               {len(grid_json) / MB:8.3f} MB  ({result['head_grid_ratio']}× smaller)   goal ≤ 1 MB")
    print(f"head switch (read + view + JSON): median {result['head_switch_ms_median']} ms, "
          f"max {result['head_switch_ms_max']} ms   goal < 200 ms")
    print(f"head grid build: median {result['head_grid_build_ms_median']} ms")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
