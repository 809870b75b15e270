"""How capture gets logits, attentions and features out of different kinds of models.

- `hooks`: forward hooks on dotted module paths or glob patterns (any ``nn.Module``).
- `fused`: recomputes attention probabilities of timm-style fused attention blocks from q and k.
- `hf`: Hugging Face ``transformers`` models (``output_attentions``, switch to eager attention).
- `probe`: one model prepared for capture, combining the above; hooks are removed on every exit path.
"""
