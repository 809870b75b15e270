"""What storing the opening CKA adds to a capture (issue 20: no page's first open over 2 s).

`kdviz.capture` stores, once the run is written, the CKA its Features page opens with (`kdviz.run_cka`), which a
served dashboard (read-only) had to compute on a visitor's first open of that page. Timed, interleaved in one run:
``kdviz.capture(..., cka=False)`` (the baseline), the default ``cka=True``, and the CKA alone on the written run
(`run_cka.cka_matrix(run, cache=False)`: what a first open of the Features page computed before). Cases:
- the demo ViT pair on the 500 held-out digits, 4 × 2 hooked blocks;
- BERT-base → DistilBERT from configs (random weights), 128 samples × 128 tokens, hidden states (13 × 7 layers), no
  attentions.

Run: python benchmarks/capture_cka.py [--repeats 3]
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
from bert_capture import bert_pair

import kdviz
from kdviz import run_cka
from kdviz.demo.build import demo_pair


def cases() -> dict[str, tuple[torch.nn.Module, torch.nn.Module, object, dict]]:
    teacher, student, (x, y) = demo_pair("digits-vit")
    vit = (teacher, student, (x, y), {"layers": ["blocks.*"], "batch_size": 100})
    bert_t, bert_s = bert_pair(128)
    ids = torch.randint(1000, 30000, (128, 128), generator=torch.Generator().manual_seed(1))
    bert = (bert_t, bert_s, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, {"attentions": False, "batch_size": 16})
    return {"demo ViT, 500 digits": vit, "BERT-base → DistilBERT, 128 × 128 tokens": bert}


def time_case(teacher, student, data, options: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per capture without and with the CKA, and of the CKA alone, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        written: list[Path] = []

        def capture(cka: bool) -> None:
            if written:
                shutil.rmtree(written[-1], ignore_errors=True)
            written.append(Path(tmp) / f"r{len(written)}.kdviz")
            kdviz.capture(teacher, student, data, path=written[-1], progress=False, device="cpu", cka=cka, **options)

        reference = kdviz.capture(teacher, student, data, path=Path(tmp) / "ref.kdviz", progress=False, device="cpu",
                                  cka=False, **options)
        return time_interleaved({"without": lambda: capture(False), "with": lambda: capture(True),
                                 "cka alone": lambda: run_cka.cka_matrix(reference, cache=False)}, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    payload: dict = {"repeats": args.repeats, "cases": {}}
    print(f"{'case':42s} {'capture, cka=False':>18s} {'cka=True':>9s} {'ratio':>6s} {'CKA alone':>10s}")
    for name, (teacher, student, data, options) in cases().items():
        times = time_case(teacher, student, data, options, args.repeats)
        without, with_, alone = (median(times[k]) for k in ("without", "with", "cka alone"))
        print(f"{name:42s} {without:16.2f} s {with_:7.2f} s {with_ / without:5.2f}× {alone:8.2f} s")
        payload["cases"][name] = {"capture_without_s": without, "capture_with_s": with_, "ratio": with_ / without,
                                  "cka_alone_s": alone, "times_s": times}
    print("wrote", write_result("capture_cka", payload))


if __name__ == "__main__":
    main()
