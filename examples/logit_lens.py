"""The logit lens of the demo character LMs (trained weights that ship with kdviz, offline): every block of the
teacher (4) and the student (2) read out through its own final norm and unembedding, on held-out text, and compared
with its own final distribution and the teacher's (kdviz.lens.logit_lens).

With real models: logit_lens(teacher, student, texts, tokenizer=AutoTokenizer.from_pretrained(...)).

Run:  python examples/logit_lens.py [N_TEXTS] [OUT_DIR]   (writes the figure as PNG when OUT_DIR is given)
"""

from __future__ import annotations

import sys

import numpy as np

from kdviz.demo import data as demo_data
from kdviz.demo.tokenizers import character_tokenizer
from kdviz.demo.weights import load_pair
from kdviz.lens import LogitLens, logit_lens
from kdviz.views.lens import logit_lens_view


def main(n_texts: int = 32, length: int = 64, out_dir: str | None = None) -> LogitLens:
    teacher, student, _ = load_pair("charlm")
    tokenizer = character_tokenizer(sorted(set(demo_data.corpus_text())))
    held_out = demo_data.split_corpus(demo_data.corpus_text())[1]
    # lines of prose from the held-out text (it also holds tables, whose dashes any model predicts at once)
    texts = [line.strip()[:length] for line in held_out.splitlines() if sum(c.isalpha() for c in line) > 40][:n_texts]
    lens = logit_lens(teacher, student, texts, tokenizer=tokenizer)
    for model in (lens.teacher, lens.student):
        print(f"{model.role} ({model.layers} blocks): median KL(own final ‖ layer) by depth "
              f"{', '.join(f'{v:.3f}' for v in np.median(model.kl_to_own_final, axis=1))}; median commit depth "
              f"{np.median(model.commit_depth):.2f}; top-1 settled at the embeddings for "
              f"{(model.commit_layer == 0).mean():.0%} of characters")
    print(f"the student's last block is {np.median(lens.student.kl_to_teacher_final[-1]):.3f} nats (median) from the "
          f"teacher's final distribution, over {lens.teacher.top1.shape[1]:,} characters of {len(texts)} texts")
    if out_dir is not None:
        from pathlib import Path

        from kdviz.views.save import save_figure

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_figure(logit_lens_view(lens), f"{out_dir}/logit_lens.png")
    return lens


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32, out_dir=sys.argv[2] if len(sys.argv) > 2 else None)
