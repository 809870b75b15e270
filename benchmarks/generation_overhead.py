"""On-policy vs off-policy scoring: `kdviz.generation.compare_generations` against Hugging Face ``generate`` alone
(the same continuations, student's and teacher's, with no scoring), timed interleaved in one run.

Pair: the Llama-style pair of llm_capture.py from configs (8L d512 GQA 8/2 → 4L d256, vocab 32,000, random weights),
greedy, ``--new`` new tokens (default 128) after prompts of 32 tokens. Goal (issue 19): ≤ 1.3× for 128 new tokens.

    python benchmarks/generation_overhead.py [--prompts 4] [--new 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, time_interleaved, write_result
from llm_capture import llama_pair

from kdviz.generation import compare_generations

VOCAB = 32_000


class IdTokenizer:
    """Prompts written as space-separated token ids, so random-weight models need no trained tokenizer."""

    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text: str) -> dict:
        return {"input_ids": [int(t) for t in text.split()]}

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


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

    def kdviz_generate() -> None:
        compare_generations(teacher, student, prompts, tokenizer=tokenizer, max_new_tokens=args.new, progress=False)

    times = time_interleaved({"HF generate": generate_alone, "compare_generations": kdviz_generate},
                             repeats=args.repeats)
    bare, ours = median(times["HF generate"]), median(times["compare_generations"])
    print(f"Llama-style 8L d512 → 4L d256, vocab {VOCAB:,}, {args.prompts} prompts × {args.new} new tokens, greedy, cpu")
    print(f"  HF generate of both models {bare:.2f} s, compare_generations {ours:.2f} s = {ours / bare:.2f}× (goal ≤ 1.3×)")
    print("wrote", write_result("generation_overhead", {
        "prompts": args.prompts, "new_tokens": args.new, "vocab": VOCAB, "seconds": times,
        "generate_s": bare, "compare_generations_s": ours, "ratio": ours / bare, "goal": 1.3}))


if __name__ == "__main__":
    main()
