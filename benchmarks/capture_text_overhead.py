"""`kdviz.capture_text` with two tokenizers against what it cannot avoid: both tokenizations of every text and each
model's forward pass over its own, timed interleaved in one run.

Pair: the Llama-style pair of llm_capture.py from configs (8L d512 GQA 8/2 → 4L d256, 32,000 output rows, random
weights). Tokenizers: a byte-level BPE (teacher) and a sentencepiece-style BPE (student) trained here on the demo
text; their pieces fill the first rows of each output layer, the rest are padding rows. Texts: ``--texts`` held-out
chunks of ``--chars`` characters (about 1,000 teacher tokens each at the default). Both sides read one text at a
time, as capture_text does. Goal (issue 19): ≤ 1.5×.

    python benchmarks/capture_text_overhead.py [--texts 4] [--chars 4000] [--repeats 3]
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

from kdviz.demo import data as demo_data
from kdviz.demo.tokenizers import as_hugging_face, train_byte_level, train_sentencepiece_like
from kdviz.text_capture import capture_text

VOCAB = 32_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4)
    parser.add_argument("--chars", type=int, default=4_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train_text, held_out = demo_data.split_corpus(demo_data.corpus_text())
    tokenizers = {"teacher": as_hugging_face(train_byte_level(train_text, 8_000)),
                  "student": as_hugging_face(train_sentencepiece_like(train_text, 6_000))}
    teacher, student = llama_pair(VOCAB)
    texts = [held_out[i * args.chars:(i + 1) * args.chars] for i in range(args.texts)]
    out = Path(tempfile.mkdtemp(prefix="kdviz-bench-")) / "text.kdviz"

    def bare() -> None:
        with torch.inference_mode():
            for text in texts:
                for role, model in (("teacher", teacher), ("student", student)):
                    encoding = tokenizers[role](text, return_offsets_mapping=True, truncation=True, max_length=1024)
                    model(input_ids=torch.tensor([encoding["input_ids"]]))

    def kdviz_capture_text() -> None:
        capture_text(teacher, student, texts, tokenizer=tokenizers["teacher"], student_tokenizer=tokenizers["student"],
                     max_length=1024, path=out, overwrite=True, progress=False, device="cpu")

    times = time_interleaved({"tokenize + forward": bare, "capture_text": kdviz_capture_text}, repeats=args.repeats)
    base, ours = median(times["tokenize + forward"]), median(times["capture_text"])
    lengths = {role: [len(tokenizers[role](t)["input_ids"][:1024]) for t in texts] for role in tokenizers}
    print(f"Llama-style 8L d512 → 4L d256, {VOCAB:,} output rows; {args.texts} texts of {args.chars:,} characters = "
          f"{sum(lengths['teacher']):,} teacher / {sum(lengths['student']):,} student tokens; "
          f"tokenizers {len(tokenizers['teacher']):,} / {len(tokenizers['student']):,} pieces; cpu")
    print(f"  tokenize + forward of both {base:.2f} s, capture_text {ours:.2f} s = {ours / base:.2f}× (goal ≤ 1.5×)")
    print("wrote", write_result("capture_text_overhead", {
        "texts": args.texts, "chars": args.chars, "tokens": lengths, "vocab_rows": VOCAB, "seconds": times,
        "bare_s": base, "capture_text_s": ours, "ratio": ours / base, "goal": 1.5}))


if __name__ == "__main__":
    main()
