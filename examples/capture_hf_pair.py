"""Capture a Hugging Face teacher/student pair and read it back.

Offline, the models are built from small configs. With internet access, load real ones instead, with eager attention:

    teacher = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", attn_implementation="eager")
    student = AutoModelForSequenceClassification.from_pretrained("prajjwal1/bert-tiny", attn_implementation="eager")

Run:  python examples/capture_hf_pair.py [OUT_DIR]
"""

from __future__ import annotations

import sys

import torch
from transformers import BertConfig, BertForSequenceClassification

import kdviz


def main(out_dir: str = "runs/examples") -> kdviz.Run:
    torch.manual_seed(0)
    common = {"vocab_size": 1000, "max_position_embeddings": 64, "num_labels": 2}
    teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=4, num_attention_heads=4, hidden_size=64,
                                                       intermediate_size=128, **common))
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
                                                       intermediate_size=64, **common))
    ids = torch.randint(1, 1000, (48, 24))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (48,))}
    run = kdviz.capture(teacher, student, data, path=f"{out_dir}/bert.kdviz", overwrite=True, batch_size=16,
                        layers=["bert.encoder.layer.*.output"], class_names=["negative", "positive"])
    print(run.info())
    print("teacher attention, layer 3:", run.teacher.attention(3))
    print("student features:", run.student.feature_names)
    return run


if __name__ == "__main__":
    main(*sys.argv[1:])
