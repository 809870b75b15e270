"""CKA over every layer pair: MinibatchCKA against pytorch-cka (the peer a user would pick, when it is installed:
``pip install 'kdviz[bench]'``) and against the naive per-pair loop, in one run on the same tensors.

Workload (issue 21): 16 teacher layers × 12 student layers, one batch of n=1024 samples, feature widths from 256 to
2048 (float32, random rectified projections of a shared latent plus noise). The contenders are timed interleaved,
best of ``--repeats``. Goals: ≥ 1.5× pytorch-cka's ``cka_from_features`` and ≥ 10× the naive loop, with values equal
to the naive loop's to 1e-6.

Printed beside the speed, so nobody makes it faster by making it wrong: the offset case, the same features plus 500
in float32, where the float64 truth (written here: centred features, U-centred Grams, numpy float64) is unchanged.

    python benchmarks/cka_speed.py [--repeats 3] [--n 1024] [--device cuda]
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

OFFSET = 500.0


def naive_pairwise(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> np.ndarray:
    """What per-pair CKA code does: for each pair, build and U-centre both Grams, then the three HSICs."""
    out = np.zeros((len(teacher), len(student)))
    for i, x in enumerate(teacher):
        for j, y in enumerate(student):
            k, m = fm.u_centre_gram(fm.linear_gram(x)), fm.u_centre_gram(fm.linear_gram(y))
            out[i, j] = float((k * m).sum() / torch.sqrt((k * k).sum() * (m * m).sum()))
    return out


def ours(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> np.ndarray:
    accumulator = fm.MinibatchCKA(len(teacher), len(student), within=False)
    accumulator.update(teacher, student)
    return accumulator.result()["cross"]


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased linear CKA in float64 numpy, from centred features: the truth the offset case is held to."""
    def u_centred(gram: np.ndarray) -> np.ndarray:
        n = len(gram)
        k = gram.copy()
        np.fill_diagonal(k, 0)
        means = k.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k -= means[:, None] + means[None, :]
        np.fill_diagonal(k, 0)
        return k

    xc, yc = x - x.mean(0), y - y.mean(0)
    k, m = u_centred(xc @ xc.T), u_centred(yc @ yc.T)
    return float((k * m).sum() / np.sqrt((k * k).sum() * (m * m).sum()))


def peer():
    """pytorch-cka's ``cka_from_features``, or None when it is not installed."""
    try:
        from cka import cka_from_features
    except ImportError:
        return None
    return cka_from_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    widths_t = np.geomspace(256, 2048, 16).astype(int)
    widths_s = np.geomspace(256, 2048, 12).astype(int)
    latent = rng.standard_normal((args.n, 64), dtype=np.float32)

    def layer(width: int, seed: int) -> torch.Tensor:
        mix = np.random.default_rng(seed).standard_normal((64, width), dtype=np.float32)
        values = np.maximum(latent @ mix, 0) + rng.standard_normal((len(latent), width), dtype=np.float32)
        return torch.from_numpy(values).to(device)

    teacher = [layer(w, i) for i, w in enumerate(widths_t)]
    student = [layer(w, 100 + i) for i, w in enumerate(widths_s)]
    cka_from_features = peer()
    contenders = {"MinibatchCKA": lambda: ours(teacher, student), "naive loop": lambda: naive_pairwise(teacher, student)}
    if cka_from_features is not None:
        contenders["pytorch-cka"] = lambda: cka_from_features(teacher, student)

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for run in contenders.values():  # untimed warm-up, so none pays start-up costs
        run()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    results: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            synchronise()
            start = time.perf_counter()
            value = run()
            synchronise()
            seconds[name].append(time.perf_counter() - start)
            results[name] = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    best = {name: min(times) for name, times in seconds.items()}
    difference = float(np.abs(results["MinibatchCKA"] - results["naive loop"]).max())

    # the offset case: one pair, features + 500 in float32; the truth is the float64 CKA of the original features
    x, y = teacher[3], student[5]
    truth = reference_cka(x.cpu().double().numpy(), y.cpu().double().numpy())
    shifted = (x + OFFSET, y + OFFSET)
    offset = {"float64 truth": truth, "MinibatchCKA": float(ours([shifted[0]], [shifted[1]])[0, 0])}
    if cka_from_features is not None:
        offset["pytorch-cka"] = float(cka_from_features([shifted[0]], [shifted[1]])[0, 0])

    print(f"16 × 12 layer pairs, n={args.n}, widths {widths_t.min()}–{widths_t.max()}, float32, {device}, best of {args.repeats}")
    for name, value in best.items():
        ratio = "" if name == "MinibatchCKA" else f"   MinibatchCKA is {value / best['MinibatchCKA']:.2f}× faster"
        print(f"  {name:14s} {value:7.3f} s{ratio}")
    goal = "≥ 1.5× pytorch-cka" if cka_from_features is not None else "(pytorch-cka not installed: pip install 'kdviz[bench]')"
    print(f"  goals: {goal}, ≥ 10× the naive loop; max |MinibatchCKA − naive| = {difference:.1e} (goal ≤ 1e-6)")
    print(f"  offset +{OFFSET:g} in float32 (one pair): " + ", ".join(f"{k} {v:.6f}" for k, v in offset.items()))
    path = write_result("cka_speed", {
        "n": args.n, "layers": [16, 12], "device": str(device), "repeats": args.repeats,
        "widths_teacher": widths_t.tolist(), "widths_student": widths_s.tolist(),
        "best_seconds": best, "seconds": seconds, "max_abs_difference_to_naive": difference,
        "speedup_over_naive": best["naive loop"] / best["MinibatchCKA"],
        "speedup_over_pytorch_cka": best["pytorch-cka"] / best["MinibatchCKA"] if "pytorch-cka" in best else None,
        "offset_case": offset,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
