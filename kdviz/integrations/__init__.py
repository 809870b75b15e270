"""Recording callbacks for training loops kdviz does not own: 🤗 transformers' Trainer (`kdviz.integrations.hf`) and
Lightning (`kdviz.integrations.lightning`). Both write the same run as `kdviz.distill(record=...)`."""
