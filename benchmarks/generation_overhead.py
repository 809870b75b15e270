"""On-policy vs off-policy scoring into a run: `kdviz.generate` against Hugging Face ``generate`` alone (the same
continuations, student's and teacher's, with no scoring and nothing stored), timed interleaved in one run; both with
capture's defaults (attention digests and pooled features too) and with ``attentions=False``.

Pair: the Llama-style pair of llm_capture.py from configs (8L d512 GQA 8/2 → 4L d256, vocab 32,000, random weights),
greedy, ``--new`` new tokens (default 128) after prompts of 32 tokens. Goal (issue 19): ≤ 1.3× for 128 new tokens.

    python benchmarks/generation_overhead.py [--prompts 4] [--new 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, time_interleaved, write_result
from llm_capture import llama_pair

import kdviz

VOCAB = 32_000


class IdTokenizer:
    """Prompts written as space-separated token ids, so random-weight models need no trained tokenizer."""

    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text: str) -> dict:
        return {"input_ids": [int(t) for t in text.split()]}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(str(int(i)) for i in ids)

    def __len__(self) -> int:
        return VOCAB

    def convert_ids_to_tokens(self, i):
        return [str(int(x)) for x in i] if isinstance(i, list) else str(int(i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    teacher, student = llama_pair(VOCAB)
    generator = torch.Generator().manual_seed(0)
    prompts = [" ".join(map(str, torch.randint(1, VOCAB, (32,), generator=generator).tolist())) for _ in range(args.prompts)]
    tokenizer = IdTokenizer()
    settings = {"max_new_tokens": args.new, "min_new_tokens": args.new, "do_sample": False, "pad_token_id": 0,
                "temperature": None, "top_p": None, "top_k": None}

    def generate_alone() -> None:
        with torch.inference_mode():
            for prompt in prompts:
                ids = torch.tensor([tokenizer(prompt)["input_ids"]])
                for model in (student, teacher):
                    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)

    def kdviz_generate(**options) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            kdviz.generate(teacher, student, prompts, tokenizer=tokenizer, max_new_tokens=args.new, progress=False,
                           path=Path(tmp) / "gen.kdviz", **options)

    times = time_interleaved({"HF generate": generate_alone, "kdviz.generate": kdviz_generate,
                              "kdviz.generate, attentions=False": lambda: kdviz_generate(attentions=False)},
                             repeats=args.repeats)
    bare = median(times["HF generate"])
    ours, logits_only = median(times["kdviz.generate"]), median(times["kdviz.generate, attentions=False"])
    print(f"Llama-style 8L d512 → 4L d256, vocab {VOCAB:,}, {args.prompts} prompts × {args.new} new tokens, greedy, cpu")
    print(f"  HF generate of both models {bare:.2f} s; kdviz.generate into a run {ours:.2f} s = {ours / bare:.2f}× "
          f"(capture's defaults), {logits_only:.2f} s = {logits_only / bare:.2f}× with attentions=False (goal ≤ 1.3×)")
    print("wrote", write_result("generation_overhead", {
        "prompts": args.prompts, "new_tokens": args.new, "vocab": VOCAB, "seconds": times, "generate_s": bare,
        "kdviz_generate_s": ours, "kdviz_generate_logits_only_s": logits_only, "ratio": ours / bare,
        "ratio_logits_only": logits_only / bare, "goal": 1.3}))


if __name__ == "__main__":
    main()
