"""How capture gets logits, attentions and features out of different kinds of models.

- `registry`: the model families, asked in order; `family_of(model)` gives the `family.ModelFamily` that handles it.
- `hf`: Hugging Face ``transformers`` models (``output_attentions``, switch to eager attention).
- `fused`: timm-style attention blocks, whose probabilities are recorded on the eager path or recomputed from q, k.
- `hooks`: forward hooks on dotted module paths or glob patterns (any ``nn.Module``).
- `probe`: one model prepared for capture through its family; hooks are removed on every exit path.
"""
