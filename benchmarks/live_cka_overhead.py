"""Live CKA (`kdviz.capture.live_cka`: CKA of every hooked teacher × student layer straight from the models, nothing
stored) against the bare forward passes of both models over the same batches, timed interleaved in one run.

Pairs: the demo CNN (3 stages each) on 3,000 digits, and a Hugging Face BERT pair from configs (4L d256 → 2L d128,
every encoder layer, token means) on 512 sequences of 128 tokens. Goal: ≤ 1.2× the bare forward passes.

A third contender, "CKA alone", feeds a fresh `MinibatchCKA` the very batches of features live CKA fed it (recorded
once), with no model run: (forward + CKA alone) ÷ forward is the floor of live CKA's ratio on this machine.

    python benchmarks/live_cka_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, time_interleaved, write_result

from kdviz.batching import iter_batches
from kdviz.capture import live_cka
from kdviz.metrics.features import MinibatchCKA

BATCH = 256


def cnn_case():
    from kdviz.demo.data import load_digits
    from kdviz.demo.weights import load_pair

    teacher, student, _ = load_pair("cnn")
    digits = load_digits()
    x = digits.x_train.repeat(3, 1, 1, 1)[:3000]
    return "demo CNN (3 stages each, 3,000 digits)", teacher, student, x, ["layer1", "layer2", "layer3"]


def bert_case():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    common = {"vocab_size": 8000, "max_position_embeddings": 128, "num_labels": 4}
    teacher = BertForSequenceClassification(
        BertConfig(num_hidden_layers=4, num_attention_heads=4, hidden_size=256, intermediate_size=1024, **common)).eval()
    student = BertForSequenceClassification(
        BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=128, intermediate_size=512, **common)).eval()
    ids = torch.randint(1, 8000, (512, 128), generator=torch.Generator().manual_seed(0))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return "HF BERT (4L d256 → 2L d128, 512 × 128 tokens)", teacher, student, data, ["bert.encoder.layer.*"]


def forward_both(teacher: torch.nn.Module, student: torch.nn.Module, data) -> None:
    with torch.inference_mode():
        for batch in iter_batches(data, BATCH):
            for model in (teacher, student):
                model(**batch.inputs) if isinstance(batch.inputs, dict) else model(batch.inputs)


def recorded_batches(teacher: torch.nn.Module, student: torch.nn.Module, data, layers) -> list[tuple[list, list]]:
    """The pooled teacher and student features of every batch, as live CKA hands them to MinibatchCKA.update."""
    batches, update = [], MinibatchCKA.update

    def record(self, t, s):
        batches.append(([torch.as_tensor(x).clone() for x in t], [torch.as_tensor(x).clone() for x in s]))
        update(self, t, s)

    MinibatchCKA.update = record
    try:
        live_cka(teacher, student, data, layers=layers, batch_size=BATCH, progress=False)
    finally:
        MinibatchCKA.update = update
    return batches


def cka_alone(batches: list[tuple[list, list]]) -> None:
    accumulator = MinibatchCKA(len(batches[0][0]), len(batches[0][1]))
    for t, s in batches:
        accumulator.update(t, s)
    accumulator.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result: dict = {"batch_size": BATCH, "goal": 1.2, "cases": {}}
    for build in (cnn_case, bert_case):
        label, teacher, student, data, layers = build()
        batches = recorded_batches(teacher, student, data, layers)
        times = time_interleaved({
            "CKA alone": lambda batches=batches: cka_alone(batches),
            "forward": lambda teacher=teacher, student=student, data=data: forward_both(teacher, student, data),
            "live_cka": lambda teacher=teacher, student=student, data=data, layers=layers: live_cka(
                teacher, student, data, layers=layers, batch_size=BATCH, progress=False),
        }, repeats=args.repeats)
        forward, live, alone = median(times["forward"]), median(times["live_cka"]), median(times["CKA alone"])
        floor = (forward + alone) / forward
        result["cases"][label] = {"forward_s": forward, "live_cka_s": live, "ratio": live / forward,
                                  "cka_alone_s": alone, "floor_ratio": floor}
        print(f"{label}: forward of both {forward:.2f} s, live CKA {live:.2f} s = {live / forward:.2f}× (goal ≤ 1.2×); "
              f"CKA alone {alone:.2f} s, so the floor is {floor:.2f}×")
    print("wrote", write_result("live_cka_overhead", result))


if __name__ == "__main__":
    main()
