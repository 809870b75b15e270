"""Cross-tokenizer comparison: pieces matched by bytes (checked against real `tokenizers` models trained here),
alignment by character offsets, exact divergences at shared boundaries and chain-rule span log-probabilities,
against float64 references written here, plus hypothesis properties (a permuted vocabulary gives divergence 0)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.demo.tokenizers import train_byte_level, train_sentencepiece_like
from kdviz.errors import InputError
from kdviz.metrics import token_alignment as ta

TEXT = ("The student learns from the teacher. The teacher knows more; the student is smaller.\n"
        "Distillation moves knowledge from one model into another — naïve students copy, good ones generalise.\n") * 4


def ref_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def ref_matched_kl(z_t, z_s, pieces_t, pieces_s):
    """Sum each model's probabilities onto strings, keep the strings both have, renormalise, KL both ways."""
    out = []
    for zt, zs in zip(z_t, z_s, strict=True):
        pt, ps = np.exp(ref_log_softmax(zt)), np.exp(ref_log_softmax(zs))
        on_t, on_s = {}, {}
        for piece, p in zip(pieces_t, pt, strict=True):
            if piece is not None:
                on_t[piece] = on_t.get(piece, 0.0) + p
        for piece, p in zip(pieces_s, ps, strict=True):
            if piece is not None:
                on_s[piece] = on_s.get(piece, 0.0) + p
        shared = sorted(set(on_t) & set(on_s))
        a, b = np.array([on_t[x] for x in shared]), np.array([on_s[x] for x in shared])
        outside_t, outside_s = 1 - a.sum(), 1 - b.sum()
        a, b = a / a.sum(), b / b.sum()
        out.append((float((a * np.log(a / b)).sum()), float((b * np.log(b / a)).sum()), outside_t, outside_s))
    return np.array(out)


def trained(kind: str, size: int):
    return train_byte_level(TEXT, size) if kind == "byte_level" else train_sentencepiece_like(TEXT, size)


@pytest.mark.parametrize("kind, size", [("byte_level", 300), ("byte_level", 600), ("sentencepiece", 400)])
def test_real_tokenizers_pieces_read_back_to_the_texts_bytes(kind, size):
    tokenizer = trained(kind, size)
    encoding = tokenizer.encode(TEXT[:200])
    vocabulary = tokenizer.get_vocab()
    assert ta.detect_scheme(list(vocabulary)) == kind
    read = b"".join(ta.piece_bytes(piece, kind) for piece in encoding.tokens)
    assert read == TEXT[:200].encode("utf-8")
    assert any(len(ta.piece_bytes(p, kind)) > 1 for p in encoding.tokens)  # merges were learnt, not bytes alone


def test_byte_level_table_maps_every_byte_once_and_markers_mean_spaces():
    table = ta._byte_level_decoder()
    assert sorted(table.values()) == list(range(256)) and len(table) == 256
    assert ta.piece_bytes("Ġworld", "byte_level") == b" world" == ta.piece_bytes("▁world", "sentencepiece")
    assert ta.piece_bytes("Ċ", "byte_level") == b"\n" == ta.piece_bytes("<0x0A>", "sentencepiece")
    assert ta.piece_bytes("ab", "plain") == b"ab"
    with pytest.raises(InputError, match="not a byte-level BPE piece"):
        ta.piece_bytes("▁x", "byte_level")
    with pytest.raises(InputError, match="scheme must be"):
        ta.piece_bytes("x", "wordpiece")


def test_the_same_text_two_real_tokenizers_align_at_their_shared_boundaries():
    small, large = trained("byte_level", 300), trained("sentencepiece", 700)
    text = TEXT[:160]
    a, b = small.encode(text), large.encode(text)
    alignment = ta.align([e for _, e in a.offsets], [e for _, e in b.offsets])
    assert alignment.boundaries[-1] == len(text)
    for role, encoding, scheme in (("teacher", a, "byte_level"), ("student", b, "sentencepiece")):
        spans = alignment.spans(role)
        assert spans[0].start == 0 and spans[-1].stop == len(encoding.tokens)
        assert all(x.stop == y.start for x, y in itertools.pairwise(spans))  # consecutive, no gaps
        for span, start, stop in zip(spans, [0, *alignment.boundaries[:-1]], alignment.boundaries, strict=True):
            pieces = b"".join(ta.piece_bytes(encoding.tokens[i], scheme) for i in span)
            assert pieces == text[start:stop].encode("utf-8")  # both models' spans hold the same text


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(2, 60), rows=st.integers(1, 9), scale=st.floats(0.1, 30.0))
def test_a_permuted_vocabulary_gives_divergence_zero(seed, vocab, rows, scale):
    rng = np.random.default_rng(seed)
    pieces = [f"p{i}".encode() for i in range(vocab)]
    perm = rng.permutation(vocab)  # student id j is teacher id perm[j]
    z_t = torch.from_numpy(rng.normal(size=(rows, vocab)) * scale)
    z_s = z_t[:, torch.from_numpy(perm)]
    match = ta.VocabularyMatch.from_bytes(pieces, [pieces[i] for i in perm])
    out = ta.matched_divergence(z_t, z_s, match)
    for name in ("kl", "reverse_kl", "teacher_outside_mass", "student_outside_mass"):
        np.testing.assert_allclose(out[name].numpy(), 0.0, atol=1e-12)
    # the same pair matched by id instead of by string would not be zero (unless the permutation is the identity)
    if (perm != np.arange(vocab)).any() and scale > 1:
        by_id = ta.matched_divergence(z_t, z_s, ta.VocabularyMatch.from_bytes(pieces, pieces))
        assert float(by_id["kl"].max()) > 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), v_t=st.integers(3, 40), v_s=st.integers(3, 40))
def test_matched_divergence_equals_the_float64_reference_with_partial_overlap_and_duplicates(seed, rows, v_t, v_s):
    rng = np.random.default_rng(seed)
    universe = [f"s{i}".encode() for i in range(max(v_t, v_s))]
    pieces_t = [universe[i] for i in rng.integers(0, len(universe), v_t)]  # repeats: two ids, one string
    pieces_s = [universe[i] for i in rng.integers(0, len(universe), v_s)]
    pieces_t[0], pieces_s[0] = universe[0], universe[0]  # at least one shared string
    if v_s > 3:
        pieces_s[-1] = None  # a padding row: never matched
    z_t, z_s = rng.normal(size=(rows, v_t)) * 3, rng.normal(size=(rows, v_s)) * 3
    out = ta.matched_divergence(torch.from_numpy(z_t), torch.from_numpy(z_s),
                                ta.VocabularyMatch.from_bytes(pieces_t, pieces_s))
    expected = ref_matched_kl(z_t, z_s, pieces_t, pieces_s)
    got = np.stack([out[k].numpy() for k in ("kl", "reverse_kl", "teacher_outside_mass", "student_outside_mass")], 1)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert (got[:, :2] >= -1e-12).all()  # KL ≥ 0
    for role, z in (("teacher", z_t), ("student", z_s)):  # each model's entropy over its whole vocabulary
        log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
        np.testing.assert_allclose(out[f"{role}_entropy"].numpy(), -(np.exp(log_p) * log_p).sum(1), rtol=1e-10)
    # rows picked out of longer logits, read chunk by chunk with their logsumexp given, are the same rows compared
    pick_t, pick_s = rng.permutation(rows + 3)[:rows], rng.permutation(rows + 2)[:rows]
    long_t, long_s = rng.normal(size=(rows + 3, v_t)) * 3, rng.normal(size=(rows + 2, v_s)) * 3
    long_t[pick_t], long_s[pick_s] = z_t, z_s
    long_t, long_s = torch.from_numpy(long_t), torch.from_numpy(long_s)
    picked = ta.matched_divergence(long_t, long_s, ta.VocabularyMatch.from_bytes(pieces_t, pieces_s),
                                   rows=(torch.from_numpy(pick_t), torch.from_numpy(pick_s)),
                                   lse=(torch.logsumexp(long_t, -1), torch.logsumexp(long_s, -1)))
    for name, value in out.items():
        np.testing.assert_allclose(picked[name].numpy(), value.numpy(), rtol=1e-12, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), pairs=st.integers(1, 12), vocab=st.integers(2, 30))
def test_merged_pieces_give_span_logprobs_equal_to_the_chain_rule_in_float64(seed, pairs, vocab):
    """The student's tokenizer merges each pair of the teacher's pieces: every student boundary is shared, and each
    span's teacher log-probability is the sum of its two pieces' log-probabilities, computed here directly."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 4, size=2 * pairs)
    ends_t = np.cumsum(lengths)
    ends_s = ends_t[1::2]
    ids_t, ids_s = rng.integers(0, vocab, 2 * pairs), rng.integers(0, vocab, pairs)
    z_t, z_s = rng.normal(size=(2 * pairs, vocab)) * 2, rng.normal(size=(pairs, vocab)) * 2
    alignment = ta.align(ends_t, ends_s)
    np.testing.assert_array_equal(alignment.boundaries, ends_s)
    np.testing.assert_array_equal(alignment.teacher_piece, np.arange(1, 2 * pairs, 2))
    logp_t = ta.true_token_logprobs(torch.from_numpy(z_t), torch.from_numpy(ids_t))
    logp_s = ta.true_token_logprobs(torch.from_numpy(z_s), torch.from_numpy(ids_s))
    spans = ta.span_logprobs(alignment, logp_t, logp_s)
    lt, ls = ref_log_softmax(z_t), ref_log_softmax(z_s)
    for k in range(1, pairs):  # span 0 holds the first piece, which nothing predicts: NaN
        teacher = lt[2 * k - 1, ids_t[2 * k]] + lt[2 * k, ids_t[2 * k + 1]]
        student = ls[k - 1, ids_s[k]]
        assert spans["teacher"][k] == pytest.approx(teacher, rel=1e-12, abs=1e-12)
        assert spans["student"][k] == pytest.approx(student, rel=1e-12, abs=1e-12)
        assert spans["difference"][k] == pytest.approx(teacher - student, rel=1e-12, abs=1e-12)
    assert np.isnan(spans["teacher"][0]) and np.isnan(spans["student"][0])


def test_alignment_takes_the_last_of_pieces_that_end_together_and_skips_pieces_without_text():
    # teacher: BOS (0), "ab" (2), three byte pieces of one character (3, 3, 3), "c" (4), EOS (−1)
    # student: no BOS, "a" (1), "b" (2), the character whole (3), "c" (4)
    alignment = ta.align([0, 2, 3, 3, 3, 4, -1], [1, 2, 3, 4])
    np.testing.assert_array_equal(alignment.boundaries, [2, 3, 4])
    np.testing.assert_array_equal(alignment.teacher_piece, [1, 4, 5])
    np.testing.assert_array_equal(alignment.student_piece, [1, 2, 3])
    assert alignment.spans("teacher") == [range(0, 2), range(2, 5), range(5, 6)]
    assert alignment.spans("student") == [range(0, 2), range(2, 3), range(3, 4)]


def test_bad_inputs_are_refused_with_the_fix():
    with pytest.raises(InputError, match="go backwards"):
        ta.align([1, 3, 2], [3])
    with pytest.raises(InputError, match="share no piece"):
        ta.VocabularyMatch.from_bytes([b"a"], [b"b"])
    match = ta.VocabularyMatch.from_bytes([b"a", b"b"], [b"a", b"b"])
    with pytest.raises(InputError, match="vocabulary match was built"):
        ta.matched_divergence(torch.zeros(2, 3), torch.zeros(2, 2), match)
    with pytest.raises(InputError, match="same r rows"):
        ta.matched_divergence(torch.zeros(2, 2), torch.zeros(3, 2), match)
    with pytest.raises(InputError, match="logits \\[T, V\\]"):
        ta.true_token_logprobs(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_piece_ends_skip_pieces_without_text_but_a_leading_bos():
    offsets = [[0, 0], [0, 2], [2, 2], [3, 5], [0, 0]]  # BOS, a piece, a trimmed lone space, a piece, EOS
    np.testing.assert_array_equal(ta.piece_ends(offsets), [0, 2, -1, 5, -1])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 5), vocab=st.integers(2, 5_000), scale=st.floats(0.1, 20.0))
def test_entropy_and_chain_rule_from_float32_logits_match_float64_references(seed, rows, vocab, scale):
    """The per-row passes run on float32 logits (a quarter of a float64 copy's traffic) and stay within 1e-5 nats of
    float64 references written here, confident rows (entropy near 0) included; float64 logits stay exact."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, vocab)) * scale
    log_p = z - z.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    entropy = -(np.exp(log_p) * log_p).sum(-1)
    np.testing.assert_allclose(ta.entropy_rows(torch.tensor(z, dtype=torch.float32)).numpy(), entropy, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ta.entropy_rows(torch.from_numpy(z)).numpy(), entropy, atol=1e-12, rtol=1e-10)
    ids = rng.integers(0, vocab, rows)
    expected = np.r_[np.nan, log_p[np.arange(rows - 1), ids[1:]]]
    for logits in (torch.tensor(z, dtype=torch.float32), torch.from_numpy(z)):
        got = ta.true_token_logprobs(logits, torch.from_numpy(ids))
        given_lse = ta.true_token_logprobs(logits, torch.from_numpy(ids), torch.logsumexp(logits, -1))
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-4 if logits.dtype == torch.float32 else 1e-10)
        np.testing.assert_allclose(given_lse.numpy(), got.numpy())
        np.testing.assert_allclose(ta.row_logsumexp(logits, rows=2).numpy(), torch.logsumexp(logits, -1).numpy(),
                                   rtol=1e-6 if logits.dtype == torch.float32 else 1e-14)
    # the boundary pass on float32 logits: entropies, outside masses and the matched KL near the float64 ones
    pieces = [f"s{i}".encode() for i in range(vocab)]
    match = ta.VocabularyMatch.from_bytes(pieces, [p if i % 7 else None for i, p in enumerate(pieces)])
    student = z[::-1].copy() * 0.5
    exact = ta.matched_divergence(torch.from_numpy(z), torch.from_numpy(student), match)
    single = ta.matched_divergence(torch.tensor(z, dtype=torch.float32), torch.tensor(student, dtype=torch.float32), match)
    np.testing.assert_allclose(exact["teacher_entropy"].numpy(), entropy, rtol=1e-10, atol=1e-12)
    for name in ("teacher_entropy", "student_entropy", "teacher_outside_mass", "student_outside_mass"):
        np.testing.assert_allclose(single[name].numpy(), exact[name].numpy(), atol=1e-5, rtol=1e-5)
    finite = np.isfinite(exact["kl"].numpy())
    np.testing.assert_allclose(single["kl"].numpy()[finite], exact["kl"].numpy()[finite], atol=1e-4, rtol=1e-4)
