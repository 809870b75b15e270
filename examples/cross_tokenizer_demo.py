"""The demo's cross-tokenizer pair (weights and tokenizers that ship with kdviz, offline): a GPT-2 teacher reading a
byte-level BPE of 1,024 pieces and a GPT-2 student reading a sentencepiece-style BPE of 768, distilled with CE +
ULD. Both score 64 held-out lines, each through its own tokenizer; per character (the chain rule makes it
comparable across tokenizers) and at the shared boundaries, against a fresh student of the same size.

Run:  python examples/cross_tokenizer_demo.py [N_TEXTS]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from kdviz.cross_tokenizer import compare_texts
from kdviz.demo.build import demo_pair
from kdviz.demo.models import build
from kdviz.demo.weights import load_pair, load_tokenizers


def main(n_texts: int = 64) -> dict[str, dict[str, float]]:
    teacher, student, texts = demo_pair("cross-tokenizer")
    tokenizers = load_tokenizers("crosslm")
    torch.manual_seed(0)
    fresh = build("char_lm", load_pair("crosslm")[2]["student"]["kwargs"]).eval()
    out = {}
    for name, model in (("distilled student", student), ("fresh student", fresh)):
        results = compare_texts(teacher, model, texts[:n_texts], tokenizer=tokenizers["teacher"],
                                student_tokenizer=tokenizers["student"], progress=False)
        # characters after the first span, which nothing predicts; the log-probabilities of the spans there
        chars = sum(int(r.alignment.boundaries[-1] - r.alignment.boundaries[0]) for r in results)
        nats = {role: -sum(np.nansum(r.spans[role][1:]) for r in results) / chars for role in ("teacher", "student")}
        kl = float(np.mean(np.concatenate([r.boundary["kl"] for r in results])))
        outside = float(np.mean(np.concatenate([r.boundary["teacher_outside_mass"] for r in results])))
        out[name] = {"teacher_nats_per_char": nats["teacher"], "student_nats_per_char": nats["student"],
                     "matched_kl": kl, "teacher_outside_mass": outside}
        print(f"{name}: teacher {nats['teacher']:.3f} nats per character, student {nats['student']:.3f}; mean "
              f"matched KL(p_t‖p_s) at shared boundaries {kl:.2f} nats; teacher's mass outside the matched "
              f"vocabulary {outside:.0%} ({len(results)} texts, {chars:,} characters)")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
