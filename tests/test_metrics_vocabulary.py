"""Per-token statistics of language models at vocabulary scale (`kdviz.metrics.vocabulary`), against float64
reference code written here, and their properties (KL ≥ 0, chunking changes nothing, a vocabulary permutation
changes nothing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.metrics import vocabulary


def reference(z_t: np.ndarray, z_s: np.ndarray, targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every statistic in float64 from the textbook definitions: log p = z − logsumexp(z)."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        top = z.max(-1, keepdims=True)
        return z - top - np.log(np.exp(z - top).sum(-1, keepdims=True))

    lt, ls = log_softmax(z_t.astype(np.float64)), log_softmax(z_s.astype(np.float64))
    pt, ps = np.exp(lt), np.exp(ls)
    out = {"kl": (pt * (lt - ls)).sum(-1), "reverse_kl": (ps * (ls - lt)).sum(-1)}
    ids = {}
    for role, lp, p in (("teacher", lt, pt), ("student", ls, ps)):
        order = np.argsort(-lp, axis=-1, kind="stable")[..., :k]
        ids[role] = order
        top = np.take_along_axis(p, order, -1)
        out[f"{role}_entropy"] = -(p * lp).sum(-1)
        out[f"{role}_topk_probs"] = top
        out[f"{role}_tail_mass"] = 1.0 - top.sum(-1)
        true = np.exp(np.take_along_axis(lp, np.maximum(targets, 0)[..., None], -1)[..., 0])
        out[f"{role}_true_prob"] = np.where(targets >= 0, true, 0.0)
    for role, p in (("teacher", pt), ("student", ps)):
        mass = np.zeros(z_t.shape[:-1])
        for index in np.ndindex(*z_t.shape[:-1]):
            shared = set(ids["teacher"][index]) & set(ids["student"][index])
            mass[index] = sum(p[index][i] for i in shared)
        out[f"{role}_shared_topk_mass"] = mass
    return out


def random_logits(seed: int, shape: tuple[int, ...], scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z_t = rng.normal(size=shape) * scale
    return z_t, z_t + rng.normal(size=shape) * scale * 0.5


@pytest.mark.parametrize("vocab", [7, 300, 1000])  # under, over and not a multiple of the float32 block
def test_every_statistic_matches_the_float64_reference(vocab):
    z_t, z_s = random_logits(0, (2, 9, vocab))
    targets = np.random.default_rng(1).integers(0, vocab, size=(2, 9))
    targets[1, -3:] = -100
    k = 5
    got = vocabulary.token_statistics(torch.tensor(z_t, dtype=torch.float32), torch.tensor(z_s, dtype=torch.float32),
                                      torch.tensor(targets), k)
    want = reference(z_t.astype(np.float32), z_s.astype(np.float32), targets, k)
    for name, value in want.items():
        np.testing.assert_allclose(got[name].double().numpy(), value, rtol=1e-5, atol=2e-6, err_msg=name)
    ref_ids = np.argsort(-z_t.astype(np.float32), axis=-1, kind="stable")[..., :k]
    np.testing.assert_array_equal(got["teacher_topk_ids"].numpy(), ref_ids)
    assert got["teacher_topk_ids"].dtype == torch.int32
    assert np.isneginf(got["student_true_logprob"][1, -1].item())
    np.testing.assert_allclose(got["student_true_logprob"][0].exp().numpy(), want["student_true_prob"][0], rtol=1e-5)


def test_chunking_does_not_change_the_result(monkeypatch):
    z_t, z_s = random_logits(3, (3, 40, 513))
    args = (torch.tensor(z_t, dtype=torch.float32), torch.tensor(z_s, dtype=torch.float32), None, 8)
    whole = vocabulary.token_statistics(*args)
    monkeypatch.setattr(vocabulary, "CHUNK_BYTES", 4 * 513 * 7)  # 7 rows per chunk: the last chunk is partial
    chunked = vocabulary.token_statistics(*args)
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=0, atol=0, msg=name)


def test_identical_models_diverge_by_exactly_zero_and_share_their_whole_top_k():
    z, _ = random_logits(4, (2, 6, 2000))
    z = torch.tensor(z, dtype=torch.float32)
    stats = vocabulary.token_statistics(z, z.clone(), None, 10)
    assert torch.all(stats["kl"] == 0) and torch.all(stats["reverse_kl"] == 0)
    torch.testing.assert_close(stats["teacher_shared_topk_mass"], 1 - stats["teacher_tail_mass"])


def test_bfloat16_logits_are_read_in_float32_without_a_float64_copy_of_the_vocabulary():
    z_t, z_s = random_logits(5, (1, 8, 640))
    bf_t, bf_s = torch.tensor(z_t).to(torch.bfloat16), torch.tensor(z_s).to(torch.bfloat16)
    got = vocabulary.token_statistics(bf_t, bf_s, None, 4)
    want = reference(bf_t.float().numpy(), bf_s.float().numpy(), np.zeros((1, 8), dtype=np.int64), 4)
    np.testing.assert_allclose(got["kl"].numpy(), want["kl"], rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), vocab=st.integers(2, 600), scale=st.floats(0.01, 30.0), k=st.integers(1, 12))
def test_properties_kl_nonnegative_masses_in_unit_interval(seed, vocab, scale, k):
    z_t, z_s = random_logits(seed, (2, 3, vocab), scale)
    stats = vocabulary.token_statistics(torch.tensor(z_t, dtype=torch.float32), torch.tensor(z_s, dtype=torch.float32),
                                        None, k)
    rounding = 1e-7 * (1 + max(np.abs(z_t).max(), np.abs(z_s).max()))  # float32 sums of terms as large as the logits
    assert torch.all(stats["kl"] >= -rounding) and torch.all(stats["reverse_kl"] >= -rounding)
    for role in ("teacher", "student"):
        tail, shared = stats[f"{role}_tail_mass"], stats[f"{role}_shared_topk_mass"]
        assert torch.all((tail >= 0) & (tail <= 1))
        assert torch.all(shared >= 0) and torch.all(shared <= 1 - tail + 1e-6)  # shared ids are inside the own top-k
        assert torch.all(stats[f"{role}_entropy"] >= -1e-6)
        assert torch.all(stats[f"{role}_entropy"] <= np.log(vocab) + 1e-4)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), vocab=st.integers(3, 400))
def test_a_vocabulary_permutation_changes_no_statistic_but_the_ids(seed, vocab):
    z_t, z_s = random_logits(seed, (1, 4, vocab))
    perm = np.random.default_rng(seed).permutation(vocab)
    targets = np.random.default_rng(seed + 1).integers(0, vocab, size=(1, 4))
    inverse = np.argsort(perm)
    tensors = [torch.tensor(z, dtype=torch.float32) for z in (z_t, z_s)]
    permuted = [torch.tensor(z[..., perm], dtype=torch.float32) for z in (z_t, z_s)]
    plain = vocabulary.token_statistics(*tensors, torch.tensor(targets), 3)
    moved = vocabulary.token_statistics(*permuted, torch.tensor(inverse[targets]), 3)
    for name in ("kl", "reverse_kl", "teacher_entropy", "student_tail_mass", "teacher_shared_topk_mass", "student_true_prob"):
        torch.testing.assert_close(moved[name].double(), plain[name].double(), rtol=1e-5, atol=1e-6, msg=name)
    np.testing.assert_array_equal(perm[moved["teacher_topk_ids"].numpy()], plain["teacher_topk_ids"].numpy())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(2, 40), pad_t=st.integers(0, 9), pad_s=st.integers(0, 70),
       shift=st.floats(-12.0, 4.0))
def test_output_layers_padded_past_the_vocabulary_are_compared_over_the_real_ids(seed, vocab, pad_t, pad_s, shift):
    """Padding columns (any logits) change no statistic taken over the real ids: the reference renormalises each
    model's softmax over them; padding_mass is each model's full-softmax mass on the padding ids, in float64."""
    z_t, z_s = random_logits(seed, (2, 5, vocab))
    rng = np.random.default_rng(seed + 1)
    padded_t = np.concatenate([z_t, rng.normal(size=(2, 5, pad_t)) + shift], -1)
    padded_s = np.concatenate([z_s, rng.normal(size=(2, 5, pad_s)) + shift], -1)
    targets = rng.integers(0, vocab, size=(2, 5))
    k = min(4, vocab)
    got = vocabulary.token_statistics(torch.tensor(padded_t, dtype=torch.float32),
                                      torch.tensor(padded_s, dtype=torch.float32), torch.tensor(targets), k, vocab=vocab)
    want = reference(z_t.astype(np.float32), z_s.astype(np.float32), targets, k)
    for name, value in want.items():
        np.testing.assert_allclose(got[name].double().numpy(), value, rtol=1e-5, atol=2e-6, err_msg=name)
    assert int(got["teacher_topk_ids"].max()) < vocab and int(got["student_topk_ids"].max()) < vocab
    for role, z in (("teacher", padded_t), ("student", padded_s)):
        z64 = z.astype(np.float32).astype(np.float64)
        p = np.exp(z64 - z64.max(-1, keepdims=True))
        expected = p[..., vocab:].sum(-1) / p.sum(-1)
        np.testing.assert_allclose(got[f"{role}_padding_mass"].numpy(), expected, rtol=1e-5, atol=1e-12)


def test_a_vocabulary_larger_than_an_output_layer_is_refused():
    z = torch.zeros(1, 3, 10)
    with pytest.raises(vocabulary.InputError, match="vocab_size= the tokenizer's real vocabulary"):
        vocabulary.token_statistics(z, torch.zeros(1, 3, 12), None, 3, vocab=11)
    with pytest.raises(vocabulary.InputError, match="same classes"):
        vocabulary.token_statistics(z, torch.zeros(1, 3, 12), None, 3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 5), vocab=st.integers(1, 30_000), k=st.integers(1, 20),
       ties=st.booleans(), padded=st.booleans())
def test_blockwise_top_k_equals_torch_topk(seed, rows, vocab, k, ties, padded):
    """The k largest values exactly (ties too: integer logits), and ids that hold them, for any vocabulary size,
    also on a row-strided view (a vocabulary sliced out of a padded output layer)."""
    rng = np.random.default_rng(seed)
    k = min(k, vocab)
    full = rng.integers(-5, 5, size=(rows, vocab + 7)) if ties else rng.normal(size=(rows, vocab + 7)) * 4
    z = torch.tensor(full, dtype=torch.float32)
    z = z[:, :vocab] if padded else z[:, :vocab].contiguous()
    values, ids = vocabulary.top_k(z, k)
    expected = z.topk(k, dim=-1).values
    torch.testing.assert_close(values, expected, rtol=0, atol=0)
    torch.testing.assert_close(z.gather(-1, ids), values, rtol=0, atol=0)
    assert all(len(set(row)) == k for row in ids.tolist())  # k distinct ids
    if not ties:
        torch.testing.assert_close(ids, z.topk(k, dim=-1).indices)


def test_head_logits_blocks_and_a_buffer_kept_across_batches_give_the_plain_statistics(monkeypatch):
    """`HeadLogits` computes the logits a block of rows at a time into one buffer, which a probe keeps from batch to
    batch: a second, shorter batch and a head of another width must reuse or replace it without mixing rows."""
    monkeypatch.setattr(vocabulary, "HEAD_BLOCK_ROWS", 5)  # 5-row blocks: 3 blocks for 12 rows, the last partial
    generator = torch.Generator().manual_seed(7)
    heads = [torch.nn.Linear(6, vocab) for vocab in (300, 300, 200)]
    kept: list[list[torch.Tensor]] = [[], []]
    for batch, (rows, head) in enumerate(zip((12, 7, 9), heads, strict=True)):
        hidden_t, hidden_s = (torch.randn(1, rows, 6, generator=generator) for _ in range(2))
        with torch.no_grad():
            plain = vocabulary.token_statistics(head(hidden_t), head(hidden_s) * 0.5, None, 4)
            scaled = torch.nn.Linear(6, head.out_features)  # the student's head: half the teacher's
            scaled.weight.copy_(head.weight * 0.5)
            scaled.bias.copy_(head.bias * 0.5)
            got = vocabulary.token_statistics(vocabulary.HeadLogits(hidden_t, head, kept[0]),
                                              vocabulary.HeadLogits(hidden_s, scaled, kept[1]), None, 4)
        for name in plain:
            torch.testing.assert_close(got[name], plain[name], rtol=1e-5, atol=1e-6, msg=f"batch {batch}: {name}")
        assert kept[0][0].shape[1] == head.out_features  # the buffer followed the head's width
