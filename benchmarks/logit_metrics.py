"""Per-sample logit divergences: kdviz.metrics.logits.divergences against a plain numpy float64 reference.

Data: 1,000,000 × 100 float32 logits (teacher and student). Both sides compute all nine per-sample measures
(forward/reverse KL, JS, JSD(β), skewed KL, TV, Hellinger, both entropies) in float64, in one run.
Goals: the whole set in under 2 s on 2 cores; recomputing one measure after a temperature change on 10,000
samples in under 50 ms.

    python benchmarks/logit_metrics.py [--samples 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, time_interleaved, write_result

from kdviz.metrics import logits as lm


def numpy_reference(z_t: np.ndarray, z_s: np.ndarray, T: float, beta: float = 0.5, lam: float = 0.1) -> dict[str, np.ndarray]:
    """The textbook formulas in float64 numpy, each measure on its own (what one would write without kdviz)."""

    def log_softmax(z):
        z = z.astype(np.float64) / T
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(z_t), log_softmax(z_s)
    pt, ps = np.exp(lt), np.exp(ls)

    def kl(p, lp, lq):
        return (p * (lp - lq)).sum(-1)

    lm_js = np.logaddexp(lt, ls) - np.log(2)
    lm_b = np.logaddexp(lt + np.log(beta), ls + np.log1p(-beta))
    lm_l = np.logaddexp(lt + np.log(lam), ls + np.log1p(-lam))
    return {
        "kl": kl(pt, lt, ls),
        "reverse_kl": kl(ps, ls, lt),
        "js": 0.5 * kl(pt, lt, lm_js) + 0.5 * kl(ps, ls, lm_js),
        "jsd": (beta * kl(pt, lt, lm_b) + (1 - beta) * kl(ps, ls, lm_b)) / (beta * (1 - beta)),
        "skew_kl": kl(pt, lt, lm_l),
        "tv": 0.5 * np.abs(pt - ps).sum(-1),
        "hellinger": np.sqrt(0.5 * ((np.sqrt(pt) - np.sqrt(ps)) ** 2).sum(-1)),
        "teacher_entropy": -(pt * lt).sum(-1),
        "student_entropy": -(ps * ls).sum(-1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    z_t = (rng.standard_normal((args.samples, args.classes), dtype=np.float32) * 3)
    z_s = (z_t + rng.standard_normal((args.samples, args.classes), dtype=np.float32)).astype(np.float32)

    results: dict[str, dict[str, np.ndarray]] = {}
    times = time_interleaved(
        {
            "numpy_reference": lambda: results.__setitem__("ref", numpy_reference(z_t, z_s, 4.0)),
            "kdviz": lambda: results.__setitem__("ours", lm.divergences(z_t, z_s, 4.0)),
        },
        repeats=args.repeats,
        warmup=0,
    )
    worst = max(float(np.max(np.abs(results["ours"][k] - results["ref"][k]) / (np.abs(results["ref"][k]) + 1e-12)))
                for k in lm.MEASURES)

    small_t, small_s = z_t[:10_000], z_s[:10_000]
    retemper = []
    for T in np.linspace(0.5, 10, 40):
        start = time.perf_counter()
        lm.kl(small_t, small_s, float(T))
        retemper.append(time.perf_counter() - start)

    ours, ref = median(times["kdviz"]), median(times["numpy_reference"])
    print(f"all 9 per-sample measures, {args.samples:,} × {args.classes} float32 logits, float64 math:")
    print(f"  numpy float64 reference {ref:7.2f} s")
    print(f"  kdviz divergences       {ours:7.2f} s   speed-up {ref / ours:.2f}×   (goal < 2 s)")
    print(f"  max relative difference {worst:.1e}")
    print(f"T change on 10,000 samples (forward KL): median {1e3 * median(retemper):.1f} ms, max {1e3 * max(retemper):.1f} ms "
          "(goal < 50 ms)")
    path = write_result("logit_metrics", {
        "samples": args.samples, "classes": args.classes, "repeats": args.repeats,
        "seconds_median": {"numpy_reference": ref, "kdviz": ours}, "seconds_all": times,
        "speedup": ref / ours, "max_relative_difference": worst,
        "retemper_10k_ms": {"median": 1e3 * median(retemper), "max": 1e3 * max(retemper)},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
