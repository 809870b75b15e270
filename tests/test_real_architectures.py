"""Capture on the architectures distillation papers use, built from configs at small sizes with their defaults:
Llama, Qwen2 and Mistral (grouped-query attention, RoPE, Mistral's sliding window) with sdpa attention and bfloat16
weights, and BERT → DistilBERT. What is stored is checked against the models' own outputs, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kdviz

VOCAB = 96


def decoder(kind: str, layers: int, width: int, heads: int, kv_heads: int) -> torch.nn.Module:
    import transformers

    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[kind]
    extra = {"sliding_window": 8} if kind == "mistral" else {}
    config = config_class(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, intermediate_size=2 * width, max_position_embeddings=64,
                          attn_implementation="sdpa", **extra)
    return model_class(config).to(torch.bfloat16).eval()


def reference_kl(z_t: torch.Tensor, z_s: torch.Tensor) -> np.ndarray:
    lt, ls = torch.log_softmax(z_t.double(), -1), torch.log_softmax(z_s.double(), -1)
    return (lt.exp() * (lt - ls)).sum(-1).numpy()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_grouped_query_decoders_in_bfloat16_with_sdpa(kind, tmp_path):
    torch.manual_seed(0)
    teacher, student = decoder(kind, 2, 64, 4, 2), decoder(kind, 1, 32, 2, 1)
    ids = torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    run = kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": mask}, path=tmp_path / "r.kdviz",
                        progress=False, batch_size=2)
    assert teacher.config._attn_implementation == "sdpa" and next(teacher.parameters()).dtype == torch.bfloat16
    assert run.teacher.description["attention_switched_from"] == "sdpa"
    assert run.teacher.heads == [4, 4] and run.student.heads == [2]  # query heads, not the shared key/value heads
    attention = run.teacher.attention(1)[:].astype(np.float64)  # [3, 4, 20, 20]
    np.testing.assert_allclose(attention.sum(-1)[0], 1.0, atol=2e-2)  # rows are distributions (float16, bf16 model)
    assert np.all(np.triu(attention[0, 0], 1) == 0)  # causal
    if kind == "mistral":  # a query attends to at most the last 8 positions
        assert np.all(np.tril(attention[0, 0], -8) == 0) and np.any(np.tril(attention[0, 0], -7) > 0)
    with torch.no_grad():  # the reference runs as the capture did: eager attention, the models' own bf16 logits
        for model in (teacher, student):
            model.set_attn_implementation("eager")
        z_t = teacher(input_ids=ids, attention_mask=mask).logits.float()
        z_s = student(input_ids=ids, attention_mask=mask).logits.float()
    real = mask.bool().numpy()
    # kdviz runs the output head itself, a block of tokens at a time (HeadLogits), in the models' bfloat16
    np.testing.assert_allclose(run.pair_token_stat("kl")[:][real], reference_kl(z_t, z_s)[real], rtol=1e-4, atol=1e-6)
    assert run.teacher.summary_features("hidden.2").shape == (3, 64)
    assert run.meta["capture"]["summary_token"] == "last"
    hidden = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2].float()
    np.testing.assert_allclose(run.teacher.summary_features("hidden.2")[2], hidden[2, 14].detach().numpy(), rtol=1e-5)


def test_bert_to_distilbert(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4,
                                                       num_attention_heads=4, intermediate_size=128, num_labels=2)).eval()
    student = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2,
                                                                   hidden_dim=64, num_labels=2)).eval()
    ids = torch.randint(1, VOCAB, (5, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    run = kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": mask}, path=tmp_path / "b.kdviz",
                        progress=False)
    assert run.teacher.heads == [4] * 4 and run.student.heads == [2] * 2
    assert run.meta["layer_map"]["pairs"] == [{"student": 0, "teacher": 1}, {"student": 1, "teacher": 3}]
    with torch.no_grad():
        want = student(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(run.student.logits[:], want, rtol=1e-5, atol=1e-6)
    assert np.allclose(run.student.attention(1)[0][:, :8, 8:], 0)  # no real query attends to the padded keys
    assert run.meta["capture"]["summary_token"] == "first"


def test_a_language_models_logits_exist_a_block_at_a_time_unless_it_changes_them_after_its_head(tmp_path):
    """Llama's head is its last step, so capture runs it itself (`HeadLogits`); Gemma 2 soft-caps its logits after
    the head, which the check of the last position finds, so its own logits are used; both give the true KL."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from kdviz.adapters.probe import ModelProbe
    from kdviz.metrics.vocabulary import HeadLogits

    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(Gemma2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           num_key_value_heads=1, head_dim=16, intermediate_size=64,
                                           final_logit_softcapping=2.0)).eval()
    llama = decoder("llama", 1, 32, 2, 1).float()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    for model, deferred in ((llama, True), (gemma, False)):
        with ModelProbe(model, "student", layers=None, attentions=False, device=torch.device("cpu"),
                        head_logits=True) as probe, torch.inference_mode():
            assert isinstance(probe.forward(ids).logits, HeadLogits) is deferred
            assert isinstance(probe.forward(ids).logits, HeadLogits) is deferred  # and for the next batch
    run = kdviz.capture(llama, gemma, ids, path=tmp_path / "g.kdviz", progress=False, attentions=False)
    with torch.no_grad():
        want = reference_kl(llama(ids).logits, gemma(ids).logits)
    np.testing.assert_allclose(run.pair_token_stat("kl")[:], want, rtol=1e-4, atol=1e-6)
