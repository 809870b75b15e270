"""On-policy vs off-policy on the demo character LMs (trained weights that ship with kdviz, offline): each held-out
prompt is continued greedily by the student and by the teacher, both continuations are scored by both models into a
run (kdviz.generate), and the divergence along each is compared.

With real models: kdviz.generate(teacher, student, prompts, tokenizer=AutoTokenizer.from_pretrained(...), path=...).

Run:  python examples/on_policy.py [N_PROMPTS] [OUT_DIR]
      (with OUT_DIR: the run is kept there as on-policy.kdviz, for `kdviz serve OUT_DIR`, and both figures as PNG)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import kdviz
from kdviz.demo import data as demo_data
from kdviz.demo.tokenizers import character_tokenizer
from kdviz.demo.weights import load_pair
from kdviz.readers.generation import GenerationData
from kdviz.views.generation import drift_by_position, fork_view


def main(n_prompts: int = 24, max_new_tokens: int = 40, out_dir: str | None = None) -> list:
    teacher, student, _ = load_pair("charlm")
    vocab = sorted(set(demo_data.corpus_text()))
    tokenizer = character_tokenizer(vocab)
    held_out = demo_data.split_corpus(demo_data.corpus_text())[1]
    prompts = [held_out[i:i + 24] for i in range(0, 400 * n_prompts, 400)]
    path = Path(out_dir) / "on-policy.kdviz" if out_dir is not None else None
    run = kdviz.generate(teacher, student, prompts, tokenizer=tokenizer, max_new_tokens=max_new_tokens, path=path,
                         overwrite=True, attentions=False, names=("teacher", "student"))
    generations = GenerationData.from_run(run).generations()
    on = np.mean([g.on_policy.stats["kl"].mean() for g in generations])
    off = np.mean([g.off_policy.stats["kl"].mean() for g in generations])
    forks = [g.fork for g in generations if g.fork is not None]
    print(f"{len(generations)} prompts, {max_new_tokens} new characters each: mean KL(p_t‖p_s) on the student's own "
          f"continuations {on:.4f} nats, on the teacher's {off:.4f}; {len(forks)} of {len(generations)} pairs of "
          f"continuations part, at a median of character {int(np.median(forks)) + 1 if forks else '—'}")
    for g in generations[:3]:
        print(f"  {g.prompt!r} → student {g.on_policy.text!r} | teacher {g.off_policy.text!r}")
    if out_dir is not None:
        from kdviz.views.save import save_figure

        print(f"the run: {run.path} (kdviz serve {out_dir}; its Tokens page shows both views)")
        save_figure(drift_by_position(generations), f"{out_dir}/drift_by_position.png")
        forked = next((g for g in generations if g.fork is not None), generations[0])
        save_figure(fork_view(forked), f"{out_dir}/fork.png")
    return generations


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24, out_dir=sys.argv[2] if len(sys.argv) > 2 else None)
