"""Capture on Hugging Face models built from configs: BERT classifiers and GPT-2 language models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bert_pair, gpt2_pair, hook_count
from scipy.special import log_softmax, rel_entr

import kdviz
from kdviz.errors import CaptureError, InputError


def tokenised(n: int = 10, length: int = 12, vocab: int = 120, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, -4:] = 0  # some padded samples
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=generator)}


def test_bert_logits_and_attentions_equal_a_direct_forward(tmp_path):
    teacher, student = bert_pair()
    data = tokenised()
    teacher.train()  # capture must switch off dropout (eval) and restore train mode afterwards
    run = kdviz.capture(teacher, student, data, path=tmp_path / "bert.kdviz", batch_size=4, layers=["bert.encoder.layer.*"],
                        progress=False)
    # transformers installs permanent output-capturing hooks of its own on the first output_attentions call
    assert teacher.training and hook_count(teacher, only_kdviz=True) == 0 and hook_count(student, only_kdviz=True) == 0
    teacher.eval()
    student.eval()
    inputs = {k: v for k, v in data.items() if k != "labels"}
    with torch.no_grad():
        direct_t = teacher(**inputs, output_attentions=True)
        direct_s = student(**inputs, output_attentions=True)
    assert torch.allclose(torch.from_numpy(run.teacher.logits[:]), direct_t.logits, atol=1e-5)
    assert torch.allclose(torch.from_numpy(run.student.logits[:]), direct_s.logits, atol=1e-5)
    for layer in range(4):
        stored = torch.from_numpy(run.teacher.attention(layer)[:].astype(np.float32))
        assert stored.shape == (10, 4, 12, 12)
        assert torch.allclose(stored, direct_t.attentions[layer], atol=1e-3)  # float16 storage
    assert run.student.attention(1).shape == (10, 2, 12, 12)
    assert run.teacher.heads == [4, 4, 4, 4] and run.student.heads == [2, 2]
    assert run.teacher.attention_layers == [f"bert.encoder.layer.{i}" for i in range(4)]
    assert run.layer_map == [(0, 1), (1, 3)]  # TinyBERT uniform map, k = 2
    np.testing.assert_array_equal(run.array("inputs/attention_mask")[:], data["attention_mask"].numpy())
    np.testing.assert_array_equal(run.labels[:], data["labels"].numpy())
    assert run.teacher.feature_names == [f"bert.encoder.layer.{i}" for i in range(4)]


def test_hf_hidden_states_are_the_default_features_pooled_over_the_real_tokens(tmp_path):
    teacher, student = bert_pair()
    data = tokenised()
    run = kdviz.capture(teacher, student, data, path=tmp_path / "r.kdviz", attentions=False, progress=False)
    assert run.teacher.feature_names == [f"hidden.{i}" for i in range(5)]  # embeddings + 4 layers
    assert run.student.pooled_names == run.student.feature_names
    assert run.student.features("hidden.2").shape == (10, 16)
    assert run.meta["capture"]["token_features"] == "pooled" and run.meta["capture"]["summary_token"] == "first"
    with torch.no_grad():
        hidden = student.eval()(input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                                output_hidden_states=True).hidden_states[2].double().numpy()
    mask = data["attention_mask"].numpy().astype(np.float64)
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1)[:, None]  # padding (samples 0, 3, 6, 9) is left out
    np.testing.assert_allclose(run.student.features("hidden.2")[:], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.student.summary_features("hidden.2")[:], hidden[:, 0], rtol=1e-5, atol=1e-6)
    whole = kdviz.capture(teacher, student, data, path=tmp_path / "t.kdviz", attentions=False, progress=False,
                          token_features="tokens")
    assert whole.student.features("hidden.2").shape == (10, 12, 16) and whole.student.pooled_names == []
    np.testing.assert_allclose(whole.student.features("hidden.2")[:], hidden, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="token_features must be one of"):
        kdviz.capture(teacher, student, data, path=tmp_path / "x.kdviz", progress=False, token_features="all")


def test_a_causal_models_summary_token_is_its_last_real_one_under_left_padding(tmp_path):
    teacher, student = gpt2_pair()
    ids = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, -2:] = 0  # right padding
    run = kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": mask}, path=tmp_path / "g.kdviz",
                        attentions=False, progress=False)
    assert run.meta["capture"]["summary_token"] == "last"
    with torch.no_grad():
        hidden = teacher.eval()(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1].numpy()
    last = [8, 8, 6, 8]
    np.testing.assert_allclose(run.teacher.summary_features(run.teacher.feature_names[-1])[:],
                               hidden[np.arange(4), last], rtol=1e-5, atol=1e-6)


def test_sdpa_model_is_switched_to_eager_for_the_capture_and_back(tmp_path):
    teacher, student = bert_pair(attn_implementation="sdpa")
    run = kdviz.capture(teacher, student, tokenised(), path=tmp_path / "r.kdviz", progress=False)
    assert run.teacher.attention(0).shape == (10, 4, 12, 12)
    assert run.teacher.description["attention_switched_from"] == "sdpa"
    assert teacher.config._attn_implementation == "sdpa" and student.config._attn_implementation == "sdpa"


def test_a_model_that_cannot_switch_gets_an_error_naming_the_fix(tmp_path, monkeypatch):
    teacher, student = bert_pair(attn_implementation="sdpa")

    def refuse(self, implementation):
        raise ValueError("this model only supports sdpa")

    monkeypatch.setattr(type(teacher), "set_attn_implementation", refuse)
    with pytest.raises(CaptureError, match="attn_implementation='eager' or pass attentions=False"):
        kdviz.capture(teacher, student, tokenised(), path=tmp_path / "r.kdviz", progress=False)
    monkeypatch.undo()
    run = kdviz.capture(teacher, student, tokenised(), path=tmp_path / "r2.kdviz", attentions=False, progress=False)
    assert run.teacher.attention_layers == []


def test_hooked_feature_patterns_on_hf_models(tmp_path):
    teacher, student = bert_pair()
    run = kdviz.capture(teacher, student, tokenised(), path=tmp_path / "r.kdviz", attentions=False, progress=False,
                        layers=["bert.encoder.layer.*.output"])
    assert run.teacher.feature_names == [f"bert.encoder.layer.{i}.output" for i in range(4)]
    assert run.student.features("bert.encoder.layer.1.output").shape == (10, 16)  # pooled over the tokens
    assert run.student.summary_features("bert.encoder.layer.1.output").shape == (10, 16)


def reference_token_stats(z_t: np.ndarray, z_s: np.ndarray, targets: np.ndarray):
    """float64 reference: forward/reverse KL with scipy's rel_entr, entropies, true-token probabilities."""
    lt, ls = log_softmax(z_t.astype(np.float64), axis=-1), log_softmax(z_s.astype(np.float64), axis=-1)
    pt, ps = np.exp(lt), np.exp(ls)
    true_t = np.take_along_axis(pt, np.maximum(targets, 0)[..., None], -1)[..., 0]
    return {
        "kl": rel_entr(pt, ps).sum(-1),
        "reverse_kl": rel_entr(ps, pt).sum(-1),
        "entropy_t": -(pt * lt).sum(-1),
        "true_t": np.where(targets >= 0, true_t, 0.0),
        "top_t": np.argsort(-pt, axis=-1)[..., :10],
    }


def test_language_model_is_summarised_per_token_not_stored_whole(tmp_path):
    teacher, student = gpt2_pair()
    ids = torch.randint(0, 50, (9, 16), generator=torch.Generator().manual_seed(1))
    run = kdviz.capture(teacher, student, {"input_ids": ids}, path=tmp_path / "lm.kdviz", batch_size=4,
                        keep_full_logits=3, tokenizer=[f"t{i}" for i in range(50)], progress=False)
    assert student.config._attn_implementation == "sdpa"  # switched back after the capture
    teacher.eval()
    student.eval()
    with torch.no_grad():
        z_t, z_s = teacher(ids).logits.numpy(), student(ids).logits.numpy()
    targets = np.full((9, 16), -100)
    targets[:, :-1] = ids[:, 1:].numpy()  # causal LM: position t predicts token t + 1
    ref = reference_token_stats(z_t, z_s, targets)
    assert run.task == "tokens"
    np.testing.assert_allclose(run.array("pair/tokens/kl")[:], ref["kl"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(run.array("pair/tokens/reverse_kl")[:], ref["reverse_kl"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(run.teacher.token("entropy")[:], ref["entropy_t"], rtol=1e-4)
    np.testing.assert_allclose(run.teacher.token("true_prob")[:], ref["true_t"], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(run.teacher.token("topk_ids")[:, :, 0], ref["top_t"][..., 0])
    assert run.teacher.token("topk_probs").shape == (9, 16, 10)
    np.testing.assert_array_equal(run.labels[:], targets)
    # full logits only for the kept subset
    assert run.teacher.logits.shape == (3, 16, 50)
    np.testing.assert_allclose(run.student.logits[:], z_s[:3], rtol=1e-5, atol=1e-5)
    assert run.meta["capture"]["full_logits_index"] == [0, 1, 2]
    # perplexity in meta = exp(mean NLL of the true tokens)
    nll = -np.log(ref["true_t"][:, :-1])
    assert run.teacher.description["perplexity"] == pytest.approx(float(np.exp(nll.mean())), rel=1e-4)
    assert run.tokens[0][:3] == [f"t{int(i)}" for i in ids[0, :3]]
    assert run.student.attention(0).shape == (9, 2, 16, 16)
    attn = run.teacher.attention(3)[0].astype(np.float32)
    assert np.allclose(np.triu(attn, 1), 0)  # causal


def test_language_model_without_full_logits_says_how_to_keep_them(tmp_path):
    teacher, student = gpt2_pair()
    run = kdviz.capture(teacher, student, torch.randint(0, 50, (4, 8)), path=tmp_path / "lm.kdviz", progress=False)
    with pytest.raises(kdviz.KdvizError, match="keep_full_logits"):
        run.teacher.logits  # noqa: B018
