"""Record an LLM distillation by TRL into a kdviz run: `kdviz.integrations.hf.KdvizCallback` on TRL's
`DistillationTrainer` (on-policy: the student writes completions that the teacher scores) or its experimental
`GKDTrainer` (generalised JSD, a mix of on-policy and dataset text), both `transformers.Trainer` subclasses.

Offline: the demo character LMs that ship with kdviz, a character tokenizer, and prompts from Python's own docs.
With real models: DistillationTrainer(model="Qwen/Qwen2.5-0.5B", teacher_model="Qwen/Qwen2.5-1.5B", ...).

Run:  python examples/trl_distillation.py [distillation|gkd] [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile

import torch

import kdviz
from kdviz.demo import data as demo_data
from kdviz.demo.tokenizers import character_tokenizer
from kdviz.demo.weights import load_pair
from kdviz.integrations.hf import KdvizCallback


def main(trainer_name: str = "distillation", out_dir: str | None = None, steps: int = 4) -> kdviz.Run:
    from datasets import Dataset

    out_dir = out_dir or tempfile.mkdtemp(prefix="kdviz-trl-")
    teacher, student, _ = load_pair("charlm")
    vocab = sorted(set(demo_data.corpus_text()))
    tokenizer = character_tokenizer(vocab)
    tokenizer.pad_token, tokenizer.eos_token = vocab[0], "\n"
    text = demo_data.corpus_text()
    # the probe: 8 fixed windows of 32 characters the student is recorded on at every snapshot
    probe = {"input_ids": torch.tensor([[vocab.index(c) for c in text[i:i + 32]] for i in range(0, 3200, 400)])}
    callback = KdvizCallback(teacher, probe, f"{out_dir}/trl-{trainer_name}.kdviz", every_n_steps=1, overwrite=True)
    common = {"output_dir": out_dir, "max_steps": steps, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
              "report_to": [], "logging_steps": 1, "save_strategy": "no", "use_cpu": True, "bf16": False}
    if trainer_name == "distillation":
        from trl import DistillationConfig, DistillationTrainer

        dataset = Dataset.from_dict({"prompt": [text[i:i + 20] for i in range(0, 4000, 500)]})
        trainer = DistillationTrainer(model=student, teacher_model=teacher, train_dataset=dataset, processing_class=tokenizer,
                                      args=DistillationConfig(max_completion_length=8, **common), callbacks=[callback])
    elif trainer_name == "gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}{% if not loop.last %}\n{% endif %}"
                                   "{% endfor %}{% if add_generation_prompt %}\n{% endif %}")
        dataset = Dataset.from_dict({"messages": [[{"role": "user", "content": text[i:i + 16]},
                                                   {"role": "assistant", "content": text[i + 16:i + 28]}]
                                                  for i in range(0, 4000, 500)]})
        trainer = GKDTrainer(model=student, teacher_model=teacher, train_dataset=dataset, processing_class=tokenizer,
                             args=GKDConfig(max_new_tokens=6, max_length=48, lmbda=0.5, **common), callbacks=[callback])
    else:
        raise SystemExit(f"trainer must be 'distillation' or 'gkd', got {trainer_name!r}")
    trainer.train()
    run = callback.run
    print(f"{type(trainer).__name__}: recorded steps {run.steps} into {run.path}")
    return run


if __name__ == "__main__":
    main(*(sys.argv[1:3]))
