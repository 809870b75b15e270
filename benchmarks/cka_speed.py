"""CKA over every layer pair: MinibatchCKA (each Gram built once per batch, one product for all pairs) against the
naive per-pair loop that recomputes both centred Grams for every pair, in one run on the same batches.

Data: 16 teacher layers × 12 student layers, batches of n=1024, feature widths from 256 to 4096 (float32).
Goal: ≥ 10× faster, with values identical to 1e-6. Also reports the time per batch and the share of it spent
building Grams (the floor: every Gram must be built once).

    python benchmarks/cka_speed.py [--batches 1] [--n 1024]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from kdviz.metrics import features as fm


def naive_pairwise(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> np.ndarray:
    """What per-pair CKA code does: for each pair, build and U-centre both Grams, then the three HSICs."""
    out = np.zeros((len(teacher), len(student)))
    for i, x in enumerate(teacher):
        for j, y in enumerate(student):
            k, m = fm.u_centre_gram(fm.linear_gram(x)), fm.u_centre_gram(fm.linear_gram(y))
            out[i, j] = float((k * m).sum() / torch.sqrt((k * k).sum() * (m * m).sum()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--n", type=int, default=1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    widths_t = np.geomspace(256, 4096, 16).astype(int)
    widths_s = np.geomspace(256, 4096, 12).astype(int)
    latent = rng.standard_normal((args.batches * args.n, 64), dtype=np.float32)

    def layer(width: int, seed: int) -> torch.Tensor:
        mix = np.random.default_rng(seed).standard_normal((64, width), dtype=np.float32)
        return torch.from_numpy(np.maximum(latent @ mix, 0) + rng.standard_normal((len(latent), width), dtype=np.float32))

    teacher = [layer(w, i) for i, w in enumerate(widths_t)]
    student = [layer(w, 100 + i) for i, w in enumerate(widths_s)]

    warm_t, warm_s = [t[: args.n] for t in teacher[:2]], [s[: args.n] for s in student[:2]]
    fm.MinibatchCKA(2, 2, within=False).update(warm_t, warm_s)  # untimed warm-up of both, so neither pays start-up costs
    naive_pairwise(warm_t, warm_s)
    ours_seconds, naive_seconds, gram_seconds = [], [], []
    accumulator = fm.MinibatchCKA(16, 12, within=False)
    naive_sum = np.zeros((16, 12))
    for b in range(args.batches):
        rows = slice(b * args.n, (b + 1) * args.n)
        t_batch, s_batch = [t[rows] for t in teacher], [s[rows] for s in student]
        start = time.perf_counter()
        accumulator.update(t_batch, s_batch)
        ours_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        for feature in (*t_batch, *s_batch):
            fm.linear_gram(feature)
        gram_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        naive_sum += naive_pairwise(t_batch, s_batch)
        naive_seconds.append(time.perf_counter() - start)
    ours = accumulator.result()["cross"]
    # the naive loop averages CKA values, not HSICs, over batches: values are comparable with one batch only
    difference = float(np.abs(ours - naive_sum).max()) if args.batches == 1 else float("nan")
    speedup = sum(naive_seconds) / sum(ours_seconds)
    print(f"16 × 12 layer pairs, n={args.n} per batch, widths {widths_t.min()}–{widths_t.max()}, "
          f"{args.batches} batch(es), float32 features")
    print(f"  naive per-pair loop   {np.mean(naive_seconds):7.2f} s per batch")
    print(f"  MinibatchCKA          {np.mean(ours_seconds):7.2f} s per batch   speed-up {speedup:.1f}×   (goal ≥ 10×)")
    print(f"  building the 28 Grams {np.mean(gram_seconds):7.2f} s per batch = {np.mean(gram_seconds) / np.mean(ours_seconds):.0%} "
          "of MinibatchCKA's time (the floor)")
    print(f"  max |difference|      {difference:.1e}   (goal ≤ 1e-6)")
    path = write_result("cka_speed", {
        "n": args.n, "batches": args.batches, "layers": [16, 12],
        "widths_teacher": widths_t.tolist(), "widths_student": widths_s.tolist(),
        "seconds_per_batch": {"minibatch_cka": float(np.mean(ours_seconds)), "naive": float(np.mean(naive_seconds)),
                              "grams_only": float(np.mean(gram_seconds))},
        "speedup": speedup, "max_abs_difference": difference,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
