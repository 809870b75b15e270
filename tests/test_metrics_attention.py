"""Attention metrics against independent float64 references written here (plain numpy loops), plus hypothesis properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.errors import InputError, KdvizError
from kdviz.metrics import attention as am


# ---- generators -----------------------------------------------------------------------------------
def attention_maps(rng, n, h, t, scale=2.0):
    """Row-stochastic [N, H, T, T]: softmax of random normal logits."""
    z = rng.normal(size=(n, h, t, t)) * scale
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def trailing_mask(lengths, t):
    """[N, T] padding mask with the first ``lengths[n]`` tokens real and the rest padding."""
    mask = np.zeros((len(lengths), t), dtype=np.int64)
    for n, length in enumerate(lengths):
        mask[n, :length] = 1
    return mask


def causal_uniform(t):
    """[T, T] each query uniform over keys 0..q."""
    a = np.zeros((t, t))
    for q in range(t):
        a[q, : q + 1] = 1.0 / (q + 1)
    return a


# ---- float64 references, straight from the formulas ------------------------------------------------
def ref_smooth(row, real_keys, eps):
    """Restrict a row to the real keys, add eps to each real key, renormalise."""
    p = np.where(real_keys, row, 0.0) + eps * real_keys
    return p / p.sum()


def ref_kl_row(p, q, real_keys):
    total = 0.0
    for k in range(len(p)):
        if real_keys[k] and p[k] > 0:
            total += p[k] * math.log(p[k] / q[k])
    return total


def ref_js_row(p, q, real_keys):
    m = 0.5 * (p + q)
    return 0.5 * ref_kl_row(p, m, real_keys) + 0.5 * ref_kl_row(q, m, real_keys)


def ref_head_divergence(a_t, a_s, mask=None, measure="kl", eps=1e-8):
    a_t, a_s = np.asarray(a_t, dtype=np.float64), np.asarray(a_s, dtype=np.float64)
    n, ht, t = a_t.shape[0], a_t.shape[1], a_t.shape[-1]
    hs = a_s.shape[1]
    mask = np.ones((n, t), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    row_fn = ref_kl_row if measure == "kl" else ref_js_row
    out = np.zeros((ht, hs))
    for h in range(ht):
        for g in range(hs):
            total, rows = 0.0, 0
            for i in range(n):
                real = mask[i].astype(np.float64)
                for q in range(t):
                    if not mask[i, q]:
                        continue
                    p = ref_smooth(a_t[i, h, q], real, eps)
                    r = ref_smooth(a_s[i, g, q], real, eps)
                    total += row_fn(p, r, mask[i])
                    rows += 1
            out[h, g] = total / rows
    return out


def ref_rows(a, mask):
    """Yield (sample, query, row renormalised over real keys) for every real query of [N, T, T] maps of one head."""
    for i in range(a.shape[0]):
        real = mask[i].astype(np.float64)
        for q in range(a.shape[-1]):
            if mask[i, q]:
                row = a[i, q] * real
                yield i, q, row / row.sum()


def ref_per_head(a, mask, fn):
    """[H] mean over every real query row of fn(sample, query, row)."""
    a = np.asarray(a, dtype=np.float64)
    mask = np.ones((a.shape[0], a.shape[-1]), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    out = []
    for h in range(a.shape[1]):
        values = [fn(i, q, row) for i, q, row in ref_rows(a[:, h], mask)]
        out.append(sum(values) / len(values))
    return np.array(out)


def ref_entropy(a, mask=None):
    return ref_per_head(a, mask, lambda i, q, row: -sum(x * math.log(x) for x in row if x > 0))


def ref_key_share(a, mask=None):
    a = np.asarray(a, dtype=np.float64)
    mask = np.ones((a.shape[0], a.shape[-1]), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    out = np.zeros((a.shape[1], a.shape[-1]))
    for h in range(a.shape[1]):
        rows = list(ref_rows(a[:, h], mask))
        for _, _, row in rows:
            out[h] += row
        out[h] /= len(rows)
    return out


def ref_fair_share(n, t, mask=None, causal=False):
    mask = np.ones((n, t), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    total, queries = np.zeros(t), 0
    for i in range(n):
        for q in range(t):
            if not mask[i, q]:
                continue
            keys = [k for k in range(t) if mask[i, k] and (k <= q or not causal)]
            for k in keys:
                total[k] += 1.0 / len(keys)
            queries += 1
    return total / queries


def ref_rollout(layers, residual=0.5):
    n, t = layers[0].shape[0], layers[0].shape[-1]
    out = np.zeros((n, t, t))
    for i in range(n):
        r = np.eye(t)
        for layer in layers:
            mean = sum(layer[i, h] for h in range(layer.shape[1])) / layer.shape[1]
            step = (1 - residual) * mean + residual * np.eye(t)
            step = step / step.sum(1, keepdims=True)
            r = step @ r
        out[i] = r
    return out


def ref_value_relation(v):
    """v [N, H, T, d] -> softmax(V Vᵀ / √d) per head, row by row."""
    n, h, t, d = v.shape
    out = np.zeros((n, h, t, t))
    for i in range(n):
        for j in range(h):
            scores = np.einsum("ad,bd->ab", v[i, j], v[i, j]) / math.sqrt(d)
            for q in range(t):
                e = np.exp(scores[q] - scores[q].max())
                out[i, j, q] = e / e.sum()
    return out


def ref_bilinear_weights(n_in, n_out):
    """[n_out, n_in] weights of 1-D linear interpolation with half-pixel centres (align_corners=False)."""
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        w[i, i0] += 1 - frac
        w[i, i1] += frac
    return w


def ref_bilinear(q, size):
    """q [B, h, w] -> [B, *size], separable bilinear resampling written out."""
    wh, ww = ref_bilinear_weights(q.shape[1], size[0]), ref_bilinear_weights(q.shape[2], size[1])
    return np.einsum("oh,bhw,pw->bop", wh, q, ww)


def ref_spatial_attention(x, p, size=None):
    x = np.asarray(x, dtype=np.float64)
    b, c = x.shape[:2]
    q = np.zeros((b, *x.shape[2:]))
    for i in range(b):
        for ch in range(c):
            q[i] += np.abs(x[i, ch]) ** p
        q[i] /= c
    if size is not None:
        q = ref_bilinear(q, size)
    for i in range(b):
        q[i] /= math.sqrt((q[i] ** 2).sum())
    return q


def ref_unit(q):
    q = np.asarray(q, dtype=np.float64)
    return q / np.sqrt((q**2).sum(axis=(-2, -1), keepdims=True))


# ---- head divergence ------------------------------------------------------------------------------
@pytest.mark.parametrize("measure", ["kl", "js"])
def test_head_divergence_matches_the_reference_with_different_head_counts(measure):
    rng = np.random.default_rng(0)
    a_t, a_s = attention_maps(rng, 3, 4, 7), attention_maps(rng, 3, 2, 7)
    got = am.head_divergence(a_t, a_s, measure=measure)
    assert got.shape == (4, 2)
    np.testing.assert_allclose(got, ref_head_divergence(a_t, a_s, measure=measure), rtol=1e-9, atol=1e-12)
    assert (got > 1e-3).all()  # unrelated heads really differ


@pytest.mark.parametrize("measure", ["kl", "js"])
def test_head_divergence_with_a_padding_mask_matches_the_reference(measure):
    rng = np.random.default_rng(1)
    a_t, a_s = attention_maps(rng, 3, 4, 8), attention_maps(rng, 3, 2, 8)
    mask = trailing_mask([8, 5, 3], 8)
    got = am.head_divergence(a_t, a_s, mask=mask, measure=measure)
    np.testing.assert_allclose(got, ref_head_divergence(a_t, a_s, mask, measure), rtol=1e-9, atol=1e-12)
    # padding matters: ignoring the mask gives a different answer
    assert not np.allclose(got, am.head_divergence(a_t, a_s, measure=measure), rtol=1e-3)
    # and whatever sits in padded rows and keys is ignored
    scrambled_t, scrambled_s = a_t.copy(), a_s.copy()
    for i, length in enumerate([8, 5, 3]):
        scrambled_t[i, :, length:, :] = rng.random((4, 8 - length, 8))
        scrambled_t[i, :, :, length:] *= rng.random((4, 8, 8 - length)) * 5
        scrambled_s[i, :, :, length:] = rng.random((2, 8, 8 - length))
    np.testing.assert_allclose(am.head_divergence(scrambled_t, scrambled_s, mask=mask, measure=measure), got, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-8, 1e-3])
def test_head_divergence_smooths_exact_zeros_with_eps(eps):
    rng = np.random.default_rng(2)
    a_t = attention_maps(rng, 2, 2, 6, scale=4.0).astype(np.float16)
    a_s = attention_maps(rng, 2, 3, 6, scale=4.0)
    a_s[a_s < 0.05] = 0.0  # student puts exact zeros where the teacher has mass
    a_s /= a_s.sum(-1, keepdims=True)
    a_s = a_s.astype(np.float16)
    got = am.head_divergence(a_t, a_s, eps=eps)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref_head_divergence(a_t, a_s, eps=eps), rtol=1e-8)
    js = am.head_divergence(a_t, a_s, eps=eps, measure="js")
    np.testing.assert_allclose(js, ref_head_divergence(a_t, a_s, measure="js", eps=eps), rtol=1e-8, atol=1e-12)


def test_head_divergence_accepts_torch_and_single_samples_and_is_not_symmetric():
    rng = np.random.default_rng(3)
    a_t, a_s = attention_maps(rng, 1, 3, 5), attention_maps(rng, 1, 3, 5)
    expected = ref_head_divergence(a_t, a_s)
    np.testing.assert_allclose(am.head_divergence(torch.tensor(a_t[0]), torch.tensor(a_s[0])), expected, rtol=1e-9)
    np.testing.assert_allclose(am.head_divergence(a_t[0], a_s[0], mask=np.ones(5)), expected, rtol=1e-9)
    reverse = am.head_divergence(a_s, a_t)
    np.testing.assert_allclose(reverse, ref_head_divergence(a_s, a_t), rtol=1e-9)
    assert not np.allclose(reverse, expected.T, rtol=1e-3)  # KL is teacher-first, not symmetric
    np.testing.assert_allclose(am.head_divergence(a_s, a_t, measure="js"), am.head_divergence(a_t, a_s, measure="js").T, rtol=1e-9)


def test_streaming_and_chunking_give_the_one_shot_result(monkeypatch):
    rng = np.random.default_rng(4)
    a_t, a_s = attention_maps(rng, 5, 3, 6), attention_maps(rng, 5, 2, 6)
    mask = trailing_mask([6, 4, 6, 2, 5], 6)
    expected = ref_head_divergence(a_t, a_s, mask)
    acc = am.HeadDivergence()
    acc.update(a_t[:2], a_s[:2], mask[:2])
    acc.update(a_t[2:], a_s[2:], mask[2:])
    np.testing.assert_allclose(acc.result(), expected, rtol=1e-9)
    assert acc.rows == mask.sum()  # pooled over real query rows, not a mean of per-batch means
    monkeypatch.setattr(am, "CHUNK_ELEMENTS", 1)  # one sample per block
    assert len(am.sample_blocks(5, 100)) == 5
    for measure in ("kl", "js"):
        np.testing.assert_allclose(am.head_divergence(a_t, a_s, mask=mask, measure=measure),
                                   ref_head_divergence(a_t, a_s, mask, measure), rtol=1e-9, atol=1e-12)


# ---- head matching --------------------------------------------------------------------------------
def brute_force_min(cost):
    ht, hs = cost.shape
    if ht <= hs:
        return min(sum(cost[i, perm[i]] for i in range(ht)) for perm in itertools.permutations(range(hs), ht))
    return min(sum(cost[perm[j], j] for j in range(hs)) for perm in itertools.permutations(range(ht), hs))


def noisy_copy(rng, a, heads, noise=0.05):
    """Student heads = the given teacher heads with small noise on the log-probabilities."""
    z = np.log(a[:, heads]) + noise * rng.normal(size=a[:, heads].shape)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_match_heads_recovers_a_permutation():
    rng = np.random.default_rng(5)
    a_t = attention_maps(rng, 4, 5, 8)
    perm = [3, 0, 4, 1, 2]  # student head g copies teacher head perm[g]
    a_s = noisy_copy(rng, a_t, perm)
    divergence = am.head_divergence(a_t, a_s)
    match = am.match_heads(divergence)
    assert sorted(match.pairs) == sorted((perm[g], g) for g in range(5))
    assert all(match.teacher_of(g) == perm[g] for g in range(5))
    assert all(match.student_of(perm[g]) == g for g in range(5))
    assert match.unmatched_teacher == [] and match.unmatched_student == []
    assert match.total == pytest.approx(brute_force_min(divergence), rel=1e-12)
    assert match.costs == [pytest.approx(divergence[t, s]) for t, s in match.pairs]


def test_match_heads_with_more_teacher_heads_reports_the_unmatched_ones():
    rng = np.random.default_rng(6)
    a_t = attention_maps(rng, 4, 5, 8)
    copied = [4, 1, 2]
    a_s = noisy_copy(rng, a_t, copied)
    divergence = am.head_divergence(a_t, a_s, measure="js")
    match = am.match_heads(divergence)
    assert sorted(match.pairs) == sorted((copied[g], g) for g in range(3))
    assert match.unmatched_teacher == [0, 3] and match.unmatched_student == []
    assert match.student_of(0) is None and match.student_of(3) is None
    assert match.total == pytest.approx(brute_force_min(divergence), rel=1e-12)


def test_match_heads_with_more_student_heads_reports_the_unmatched_ones():
    rng = np.random.default_rng(7)
    a_t = attention_maps(rng, 4, 3, 8)
    copies = noisy_copy(rng, a_t, [2, 0, 1])
    extra = attention_maps(rng, 4, 2, 8)
    a_s = np.concatenate([extra[:, :1], copies[:, :2], extra[:, 1:], copies[:, 2:]], axis=1)  # heads: x, t2, t0, x, t1
    divergence = am.head_divergence(a_t, a_s)
    match = am.match_heads(divergence)
    assert sorted(match.pairs) == [(0, 2), (1, 4), (2, 1)]
    assert match.unmatched_student == [0, 3] and match.unmatched_teacher == []
    assert match.teacher_of(0) is None and match.teacher_of(3) is None
    assert match.total == pytest.approx(brute_force_min(divergence), rel=1e-12)


@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_match_heads_is_optimal_by_brute_force(ht, hs, seed):
    cost = np.random.default_rng(seed).random((ht, hs))
    match = am.match_heads(cost)
    assert len(match.pairs) == min(ht, hs)
    assert len({t for t, _ in match.pairs}) == len(match.pairs) == len({s for _, s in match.pairs})
    assert sorted(match.unmatched_teacher + [t for t, _ in match.pairs]) == list(range(ht))
    assert sorted(match.unmatched_student + [s for _, s in match.pairs]) == list(range(hs))
    assert match.costs == [cost[t, s] for t, s in match.pairs]
    assert match.total == pytest.approx(brute_force_min(cost), rel=1e-12)


# ---- layer divergence -----------------------------------------------------------------------------
@pytest.mark.parametrize("measure", ["kl", "js"])
def test_layer_divergence_is_head_divergence_of_head_averaged_maps(measure):
    rng = np.random.default_rng(8)
    teacher = [attention_maps(rng, 3, 4, 6) for _ in range(3)]
    student = [attention_maps(rng, 3, 2, 6) for _ in range(2)]
    student[1] = noisy_copy(rng, teacher[2], [0, 1, 2, 3])  # four heads: head counts differ per layer too
    mask = trailing_mask([6, 4, 5], 6)
    got = am.layer_divergence(teacher, student, mask=mask, measure=measure)
    assert got.shape == (3, 2)

    def head_mean(a):
        return (sum(a[:, h] for h in range(a.shape[1])) / a.shape[1])[:, None]

    expected = np.array([[ref_head_divergence(head_mean(t), head_mean(s), mask, measure)[0, 0] for s in student] for t in teacher])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got[2, 1] == got[:, 1].min()  # the copied layer is the closest
    streaming = am.LayerDivergence(3, 2, measure)
    streaming.update([t[:1] for t in teacher], [s[:1] for s in student], mask[:1])
    streaming.update([t[1:] for t in teacher], [s[1:] for s in student], mask[1:])
    np.testing.assert_allclose(streaming.result(), expected, rtol=1e-9, atol=1e-12)


# ---- per-head summaries ---------------------------------------------------------------------------
def test_attention_entropy_matches_the_reference():
    rng = np.random.default_rng(9)
    a = attention_maps(rng, 3, 4, 7)
    mask = trailing_mask([7, 3, 5], 7)
    np.testing.assert_allclose(am.attention_entropy(a), ref_entropy(a), rtol=1e-10)
    np.testing.assert_allclose(am.attention_entropy(a, mask=mask), ref_entropy(a, mask), rtol=1e-10)
    uniform = np.full((2, 1, 6, 6), 1 / 6)
    np.testing.assert_allclose(am.attention_entropy(uniform), [math.log(6)], rtol=1e-12)
    np.testing.assert_allclose(am.attention_entropy(uniform, mask=trailing_mask([6, 2], 6)), [(6 * math.log(6) + 2 * math.log(2)) / 8],
                               rtol=1e-12)
    np.testing.assert_allclose(am.attention_entropy(np.eye(5)[None, None]), [0.0], atol=1e-15)


def test_token_positions_for_text_and_vit():
    np.testing.assert_array_equal(am.token_positions(4), [[0], [1], [2], [3]])
    text = am.token_positions(4, prefix=1)
    assert np.isnan(text[0, 0]) and text[1:, 0].tolist() == [0, 1, 2]
    vit = am.token_positions(17, grid=(4, 4), prefix=1)
    assert vit.shape == (17, 2) and np.isnan(vit[0]).all()
    for i in range(16):
        assert vit[1 + i].tolist() == [i // 4, i % 4]
    assert am.token_positions(7, grid=(2, 3), prefix=1)[6].tolist() == [1, 2]  # rows × columns, row-major


def ref_distance(a, positions, mask=None):
    a = np.asarray(a, dtype=np.float64)
    placed = ~np.isnan(positions).any(1)
    mask = np.ones((a.shape[0], a.shape[-1]), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    mask = mask & placed[None, :]

    def row_distance(i, q, row):
        return sum(row[k] * math.sqrt(((positions[q] - positions[k]) ** 2).sum()) for k in range(len(row)) if row[k] > 0)

    return ref_per_head(a, mask, row_distance)


def test_attention_distance_for_text_uses_token_index():
    rng = np.random.default_rng(10)
    a = attention_maps(rng, 2, 3, 8)
    mask = trailing_mask([8, 5], 8)
    positions = np.arange(8, dtype=np.float64)[:, None]
    np.testing.assert_allclose(am.attention_distance(a), ref_distance(a, positions), rtol=1e-10)
    np.testing.assert_allclose(am.attention_distance(a, mask=mask), ref_distance(a, positions, mask), rtol=1e-10)
    previous = np.zeros((1, 1, 5, 5))  # each query looks 1 token back (the first looks at itself)
    previous[0, 0, 0, 0] = 1
    for q in range(1, 5):
        previous[0, 0, q, q - 1] = 1
    np.testing.assert_allclose(am.attention_distance(previous), [4 / 5], rtol=1e-12)
    np.testing.assert_allclose(am.attention_distance(np.eye(5)[None, None]), [0.0], atol=1e-15)


def test_attention_distance_for_vit_excludes_cls_and_uses_patch_units():
    rng = np.random.default_rng(11)
    a = attention_maps(rng, 2, 3, 17, scale=1.5)
    a[:, :, :, 0] += 5.0  # CLS is a heavy sink: must not count as a key
    a /= a.sum(-1, keepdims=True)
    positions = am.token_positions(17, grid=(4, 4), prefix=1)
    got = am.attention_distance(a, positions)
    np.testing.assert_allclose(got, ref_distance(a, positions), rtol=1e-10)
    # explicit check of the CLS handling: restrict to patches, renormalise, Euclidean distance in patches
    grid = np.array([[i // 4, i % 4] for i in range(16)], dtype=np.float64)
    dist = np.sqrt(((grid[:, None] - grid[None]) ** 2).sum(-1))
    patches = a[:, :, 1:, 1:] / a[:, :, 1:, 1:].sum(-1, keepdims=True)
    np.testing.assert_allclose(got, np.einsum("nhqk,qk->h", patches, dist) / (2 * 16), rtol=1e-10)
    # a head that attends only to the CLS token (and otherwise uniformly) has the uniform patch distance
    uniform = np.full((1, 1, 17, 17), 1 / 17)
    np.testing.assert_allclose(am.attention_distance(uniform, positions), [dist.mean()], rtol=1e-12)


def test_key_cls_and_diagonal_shares_match_the_reference():
    rng = np.random.default_rng(12)
    a = attention_maps(rng, 3, 2, 6)
    mask = trailing_mask([6, 4, 2], 6)
    for m in (None, mask):
        share = am.key_share(a, mask=m)
        np.testing.assert_allclose(share, ref_key_share(a, m), rtol=1e-10)
        np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(am.cls_share(a, mask=m), ref_key_share(a, m)[:, 0], rtol=1e-10)
        np.testing.assert_allclose(am.cls_share(a, index=3, mask=m), ref_key_share(a, m)[:, 3], rtol=1e-10)
        np.testing.assert_allclose(am.diagonal_share(a, mask=m), ref_per_head(a, m, lambda i, q, row: row[q]), rtol=1e-10)
    assert (am.key_share(a, mask=mask)[:, 4:] == 0).sum() == 0  # sample 0 has real keys 4 and 5
    only_short = am.key_share(a[2:], mask=mask[2:])
    assert (only_short[:, 2:] == 0).all()  # padded keys get nothing
    np.testing.assert_allclose(am.diagonal_share(np.eye(4)[None, None].repeat(2, 1)), [1.0, 1.0])


@pytest.mark.parametrize("causal", [False, True])
def test_fair_share_matches_the_reference(causal):
    mask = trailing_mask([7, 4, 1], 7)
    np.testing.assert_allclose(am.fair_share(3, 7, causal=causal), ref_fair_share(3, 7, causal=causal), rtol=1e-12)
    np.testing.assert_allclose(am.fair_share(3, 7, mask=mask, causal=causal), ref_fair_share(3, 7, mask, causal), rtol=1e-12)
    assert am.fair_share(3, 7, mask=mask, causal=causal).sum() == pytest.approx(1.0)
    if causal:  # early keys are visible to more queries
        fair = am.fair_share(1, 7, causal=True)
        assert (np.diff(fair) < 0).all() and fair[0] == pytest.approx(sum(1 / (q + 1) for q in range(7)) / 7)


def sink_and_uniform_heads(t, causal):
    """Head 0 puts 0.9 on key 0 and spreads 0.1 over the other visible keys; head 1 is uniform over visible keys."""
    maps = np.zeros((2, 2, t, t))
    for q in range(t):
        visible = q + 1 if causal else t
        maps[:, 1, q, :visible] = 1.0 / visible
        if visible == 1:
            maps[:, 0, q, 0] = 1.0
        else:
            maps[:, 0, q, 0] = 0.9
            maps[:, 0, q, 1:visible] = 0.1 / (visible - 1)
    return maps


@pytest.mark.parametrize(("t", "causal"), [(8, False), (32, True)])
def test_attention_sinks_flags_a_planted_sink_and_not_a_uniform_head(t, causal):
    maps = sink_and_uniform_heads(t, causal)
    assert am.is_causal(maps) == causal
    for flag in (None, causal):  # auto-detected and explicit
        result = am.attention_sinks(maps, causal=flag)
        np.testing.assert_allclose(result["fair"], ref_fair_share(2, t, causal=causal), rtol=1e-12)
        np.testing.assert_allclose(result["share"], ref_key_share(maps), rtol=1e-12)
        np.testing.assert_allclose(result["ratio"], ref_key_share(maps) / ref_fair_share(2, t, causal=causal), rtol=1e-10)
        assert result["sinks"][0, 0] and not result["sinks"][0, 1:].any()
        assert not result["sinks"][1].any()
        np.testing.assert_allclose(result["ratio"][1], 1.0, rtol=1e-10)
    if causal:
        # judged against the non-causal fair share, a uniform causal head would look like a sink on key 0
        assert am.attention_sinks(maps, causal=False)["sinks"][1, 0]


def test_attention_sinks_with_padding_and_head_summaries():
    rng = np.random.default_rng(13)
    a = attention_maps(rng, 3, 2, 6)
    a[:, 0, :, 2] += 8.0  # head 0 sinks on key 2
    a /= a.sum(-1, keepdims=True)
    mask = trailing_mask([6, 5, 3], 6)
    result = am.attention_sinks(a, mask=mask)
    fair = ref_fair_share(3, 6, mask)
    np.testing.assert_allclose(result["ratio"], ref_key_share(a, mask) / fair, rtol=1e-10)
    assert result["sinks"][0, 2] and not result["sinks"][1].any()
    summary = am.head_summaries(a, mask=mask)
    assert set(summary) == set(am.SUMMARIES)
    np.testing.assert_allclose(summary["entropy"], ref_entropy(a, mask), rtol=1e-10)
    np.testing.assert_allclose(summary["distance"], ref_distance(a, np.arange(6.0)[:, None], mask), rtol=1e-10)
    np.testing.assert_allclose(summary["cls"], ref_key_share(a, mask)[:, 0], rtol=1e-10)
    np.testing.assert_allclose(summary["sink"], (ref_key_share(a, mask) / fair).max(1), rtol=1e-10)


def test_is_causal():
    rng = np.random.default_rng(14)
    assert am.is_causal(causal_uniform(5)[None, None])
    assert not am.is_causal(attention_maps(rng, 1, 2, 5))
    assert not am.is_causal(np.ones((1, 1, 1, 1)))  # a single token says nothing


# ---- rollout --------------------------------------------------------------------------------------
def test_rollout_matches_the_reference_and_respects_layer_order():
    rng = np.random.default_rng(15)
    layers = [attention_maps(rng, 2, 3, 5) for _ in range(3)]
    for residual in (0.5, 0.2, 0.0):
        got = am.rollout(layers, residual=residual)
        np.testing.assert_allclose(got, ref_rollout(layers, residual), rtol=1e-10)
        np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-12)
    forward, backward = am.rollout(layers), am.rollout(layers[::-1])
    np.testing.assert_allclose(backward, ref_rollout(layers[::-1]), rtol=1e-10)
    assert not np.allclose(forward, backward, atol=1e-4)  # the layers do not commute: order matters
    two = am.rollout(layers[:2])
    np.testing.assert_allclose(two, ref_rollout(layers[:2]), rtol=1e-10)
    assert not np.allclose(two, am.rollout(layers[1::-1]), atol=1e-4)
    np.testing.assert_allclose(am.rollout(layers, residual=1.0), np.broadcast_to(np.eye(5), (2, 5, 5)))
    np.testing.assert_allclose(am.rollout([torch.tensor(layers[0][0])]), ref_rollout([layers[0][:1]]), rtol=1e-10)


# ---- value relation -------------------------------------------------------------------------------
def test_value_relation_matches_the_reference_in_both_layouts():
    rng = np.random.default_rng(16)
    v = rng.normal(size=(2, 3, 5, 4)) * 2
    expected = ref_value_relation(v)
    np.testing.assert_allclose(am.value_relation(v), expected, rtol=1e-10)
    np.testing.assert_allclose(am.value_relation(torch.tensor(v, dtype=torch.float32)), expected, rtol=1e-5)
    flat = np.zeros((2, 5, 12))  # [N, T, H·d], head h in columns h·d .. (h+1)·d
    for n in range(2):
        for t in range(5):
            for h in range(3):
                flat[n, t, 4 * h: 4 * h + 4] = v[n, h, t]
    got = am.value_relation(flat, heads=3)
    assert got.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-12)
    # a different head split is a different relation (√d and the groups change)
    assert not np.allclose(am.value_relation(flat, heads=2)[:, :1], got[:, :1], atol=1e-3)
    np.testing.assert_allclose(am.value_relation(flat, heads=2), ref_value_relation(flat.reshape(2, 5, 2, 6).transpose(0, 2, 1, 3)),
                               rtol=1e-10)


# ---- attention transfer ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.5])
def test_spatial_attention_matches_the_reference(p):
    rng = np.random.default_rng(17)
    x = rng.normal(size=(3, 5, 4, 6))  # negative activations: |A| matters for odd p
    got = am.spatial_attention(torch.tensor(x), p)
    assert got.shape == (3, 4, 6)
    np.testing.assert_allclose(got.numpy(), ref_spatial_attention(x, p), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.reshape(3, -1).norm(dim=1).numpy(), 1.0, rtol=1e-5)
    assert (got >= 0).all()


def test_spatial_attention_uses_abs_for_odd_p():
    rng = np.random.default_rng(18)
    x = rng.normal(size=(2, 6, 3, 3))
    got = am.spatial_attention(torch.tensor(x), 3).numpy()
    q_no_abs = (x**3).mean(1)
    no_abs = q_no_abs / np.sqrt((q_no_abs**2).sum(axis=(1, 2), keepdims=True))
    assert (q_no_abs < 0).any()  # the test data would expose the sign error
    assert not np.allclose(got, no_abs, atol=1e-3)
    np.testing.assert_allclose(got, ref_spatial_attention(x, 3), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(am.spatial_attention(torch.tensor(-x), 3).numpy(), got, rtol=1e-6)


@pytest.mark.parametrize("size", [(8, 12), (2, 3), (5, 4)])
def test_spatial_attention_resamples_before_normalising(size):
    rng = np.random.default_rng(19)
    x = rng.normal(size=(2, 3, 4, 6))
    got = am.spatial_attention(torch.tensor(x), 2.0, size=size)
    assert tuple(got.shape) == (2, *size)
    np.testing.assert_allclose(got.numpy(), ref_spatial_attention(x, 2.0, size), rtol=1e-5, atol=1e-7)
    same = am.spatial_attention(torch.tensor(x), 2.0, size=(4, 6))
    np.testing.assert_allclose(same.numpy(), ref_spatial_attention(x, 2.0), rtol=1e-5, atol=1e-7)


def test_reference_bilinear_agrees_with_torch():
    q = np.random.default_rng(20).random((2, 3, 5))
    for size in [(6, 10), (7, 4), (2, 2)]:
        torch_out = F.interpolate(torch.tensor(q)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
        np.testing.assert_allclose(ref_bilinear(q, size), torch_out, rtol=1e-12)


def test_at_distance_for_equal_sizes():
    rng = np.random.default_rng(21)
    q_t, q_s = rng.random((4, 5, 5)), rng.random((4, 5, 5)) * 7
    expected = np.sqrt(((ref_unit(q_s) - ref_unit(q_t)) ** 2).sum(axis=(1, 2)))
    got = am.at_distance(q_t, q_s)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    np.testing.assert_allclose(am.at_distance(q_t, q_t * 3), 0.0, atol=1e-12)  # scale-free
    np.testing.assert_allclose(am.at_distance(torch.tensor(q_t[0]), q_s[0]), expected[:1], rtol=1e-10)
    left, right = np.zeros((1, 4, 4)), np.zeros((1, 4, 4))
    left[..., :2], right[..., 2:] = 1.0, 2.0
    np.testing.assert_allclose(am.at_distance(left, right), [math.sqrt(2)], rtol=1e-12)  # disjoint supports: the bound


@pytest.mark.parametrize(("shape_t", "shape_s"), [((8, 8), (4, 4)), ((3, 5), (6, 10)), ((7, 3), (4, 9))])
def test_at_distance_for_different_sizes_upsamples_then_renormalises(shape_t, shape_s):
    rng = np.random.default_rng(22)
    q_t, q_s = rng.random((3, *shape_t)), rng.random((3, *shape_s))
    size = (max(shape_t[0], shape_s[0]), max(shape_t[1], shape_s[1]))

    def up(q):
        if q.shape[1:] == size:
            return q
        return F.interpolate(torch.tensor(q)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()

    expected = np.sqrt(((ref_unit(up(q_s)) - ref_unit(up(q_t))) ** 2).sum(axis=(1, 2)))
    got = am.at_distance(q_t, q_s)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # same with the reference bilinear and maps normalised first (normalising before resampling does not matter)
    s_ref, t_ref = ref_unit(ref_bilinear(ref_unit(q_s), size)), ref_unit(ref_bilinear(ref_unit(q_t), size))
    expected_ref = np.sqrt(((s_ref - t_ref) ** 2).sum(axis=(1, 2)))
    np.testing.assert_allclose(got, expected_ref, rtol=1e-10)
    assert (got > 0).all() and (got <= math.sqrt(2)).all()
    t_matched, s_matched = am.match_spatial_size(q_t, q_s)
    assert tuple(t_matched.shape) == tuple(s_matched.shape) == (3, *size)


def test_at_distance_of_a_map_and_its_upsampled_copy_is_zero():
    q = np.random.default_rng(23).random((2, 4, 4))
    upsampled = F.interpolate(torch.tensor(q)[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(am.at_distance(q, upsampled), 0.0, atol=1e-12)
    np.testing.assert_allclose(am.at_distance(upsampled * 5, q), 0.0, atol=1e-12)


def test_spatial_attention_feeds_at_distance():
    rng = np.random.default_rng(24)
    teacher, student = torch.tensor(rng.normal(size=(2, 8, 8, 8))), torch.tensor(rng.normal(size=(2, 4, 4, 4)))
    got = am.at_distance(am.spatial_attention(teacher), am.spatial_attention(student))
    expected = np.sqrt(((ref_spatial_attention(student.numpy(), 2, (8, 8)) - ref_spatial_attention(teacher.numpy(), 2)) ** 2).sum((1, 2)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ---- properties -----------------------------------------------------------------------------------
@st.composite
def attention_cases(draw, max_heads=4):
    n, t = draw(st.integers(1, 3)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 2.0, 8.0, 30.0]))
    rng = np.random.default_rng(seed)
    a_t = attention_maps(rng, n, draw(st.integers(1, max_heads)), t, scale)
    a_s = attention_maps(rng, n, draw(st.integers(1, max_heads)), t, scale)
    if draw(st.booleans()):  # exact zeros, as float16 storage gives
        a_s[a_s < 0.05] = 0.0
        a_s /= a_s.sum(-1, keepdims=True)
    lengths = [draw(st.integers(1, t)) for _ in range(n)] if draw(st.booleans()) else [t] * n
    return a_t, a_s, trailing_mask(lengths, t)


@given(attention_cases(), st.sampled_from([0.0, 1e-8, 1e-3]))
@settings(max_examples=50, deadline=None)
def test_renormalised_rows_sum_to_one_over_real_keys(case, eps):
    a, _, mask = case
    out = am.renormalise(torch.tensor(a), torch.tensor(mask).bool(), eps).numpy()
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-12)
    assert (out[np.broadcast_to(mask[:, None, None, :] == 0, out.shape)] == 0).all()
    assert (out >= 0).all()


@given(attention_cases())
@settings(max_examples=50, deadline=None)
def test_divergence_properties(case):
    a_t, a_s, mask = case
    self_kl = am.head_divergence(a_t, a_t, mask=mask)
    np.testing.assert_allclose(np.diag(self_kl), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.diag(am.head_divergence(a_s, a_s, mask=mask, measure="js")), 0.0, atol=1e-9)
    kl = am.head_divergence(a_t, a_s, mask=mask)
    assert np.isfinite(kl).all() and (kl >= 0).all()
    js = am.head_divergence(a_t, a_s, mask=mask, measure="js")
    assert (js >= -1e-12).all() and (js <= math.log(2) + 1e-12).all()


@given(attention_cases())
@settings(max_examples=40, deadline=None)
def test_summary_properties(case):
    a, _, mask = case
    t = a.shape[-1]
    share = am.key_share(a, mask=mask)
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-10)
    assert (share >= 0).all()
    entropy = am.attention_entropy(a, mask=mask)
    assert (entropy >= -1e-12).all() and (entropy <= math.log(t) + 1e-12).all()
    np.testing.assert_allclose(am.fair_share(a.shape[0], t, mask=mask, causal=True).sum(), 1.0, rtol=1e-12)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), st.integers(1, 6), st.floats(0, 1), st.sampled_from([0.5, 2.0, 30.0]))
@settings(max_examples=40, deadline=None)
def test_rollout_rows_sum_to_one(seeds, t, residual, scale):
    layers = [attention_maps(np.random.default_rng(s), 2, 3, t, scale) for s in seeds]
    out = am.rollout(layers, residual=residual)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-10)
    assert (out >= 0).all()


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 6), st.floats(0.5, 4))
@settings(max_examples=40, deadline=None)
def test_at_distance_is_bounded_and_zero_for_identical_maps(seed, h, w, p):
    rng = np.random.default_rng(seed)
    x_t, x_s = torch.tensor(rng.normal(size=(2, 3, h, w))), torch.tensor(rng.normal(size=(2, 3, h, w)))
    q_t, q_s = am.spatial_attention(x_t, p), am.spatial_attention(x_s, p)
    d = am.at_distance(q_t, q_s)
    assert (d >= 0).all() and (d <= math.sqrt(2) + 1e-9).all()
    np.testing.assert_allclose(am.at_distance(q_t, q_t), 0.0, atol=1e-12)


# ---- errors ---------------------------------------------------------------------------------------
def test_input_error_is_a_kdviz_error():
    assert issubclass(InputError, KdvizError)


def test_bad_attention_shapes_are_rejected():
    good = attention_maps(np.random.default_rng(25), 2, 2, 5)
    with pytest.raises(InputError, match="square maps"):
        am.head_divergence(np.ones((2, 2, 5, 4)), good)
    with pytest.raises(InputError, match="square maps"):
        am.attention_entropy(np.ones((5, 5)))
    with pytest.raises(InputError, match="same tokens"):
        am.head_divergence(good, attention_maps(np.random.default_rng(26), 2, 2, 6))
    with pytest.raises(InputError, match="same samples"):
        am.head_divergence(good, good[:1])
    with pytest.raises(InputError, match=r"mask must be \[N, T\] = \[2, 5\]"):
        am.head_divergence(good, good, mask=np.ones((2, 6)))
    with pytest.raises(InputError, match=r"mask must be \[N, T\]"):
        am.key_share(good, mask=np.ones((3, 5)))
    with pytest.raises(InputError, match=r"mask must be \[N, T\]"):
        am.fair_share(2, 5, mask=np.ones(5))
    with pytest.raises(InputError, match="positions has 4 rows"):
        am.attention_distance(good, np.arange(4.0))
    with pytest.raises(InputError, match="expected 2 teacher and 1 student layers"):
        am.LayerDivergence(2, 1).update([good], [good])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_attention_is_rejected(bad):
    good = attention_maps(np.random.default_rng(27), 2, 2, 5)
    broken = good.copy()
    broken[1, 0, 2, 3] = bad
    with pytest.raises(InputError, match="teacher attention contains NaN or inf"):
        am.head_divergence(broken, good)
    with pytest.raises(InputError, match="student attention contains NaN or inf"):
        am.head_divergence(good, torch.tensor(broken))
    with pytest.raises(InputError, match="contains NaN or inf"):
        am.layer_divergence([good], [broken])
    with pytest.raises(InputError, match="attention contains NaN or inf"):
        am.attention_entropy(broken)
    with pytest.raises(InputError, match="attention layer 1 contains NaN or inf"):
        am.rollout([good, broken])
    with pytest.raises(InputError, match="NaN or inf"):
        am.match_heads(np.array([[0.1, bad], [0.2, 0.3]]))


@pytest.mark.parametrize(("name", "call"), [
    ("value_relation", lambda x: am.value_relation(x)),
    ("spatial_attention", lambda x: am.spatial_attention(torch.tensor(x))),
    ("at_distance", lambda x: am.at_distance(np.abs(x[:, 0]), np.ones((2, 3, 3)))),
])
def test_nan_values_and_features_are_rejected(name, call):
    x = np.random.default_rng(28).normal(size=(2, 2, 3, 3))
    x[0, 0, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        call(x)


def test_unknown_measure_and_empty_results_are_rejected():
    good = attention_maps(np.random.default_rng(29), 2, 2, 4)
    with pytest.raises(InputError, match="unknown attention divergence 'mse'"):
        am.head_divergence(good, good, measure="mse")
    with pytest.raises(InputError, match="unknown attention divergence"):
        am.layer_divergence([good], [good], measure="cosine")
    with pytest.raises(InputError, match="no attention rows"):
        am.HeadDivergence().result()
    with pytest.raises(InputError, match="every query was padding"):
        am.head_divergence(good, good, mask=np.zeros((2, 4)))


def test_match_heads_rejects_bad_matrices():
    with pytest.raises(InputError, match="non-empty"):
        am.match_heads(np.ones(3))
    with pytest.raises(InputError, match="non-empty"):
        am.match_heads(np.ones((0, 3)))


def test_rollout_rejects_bad_input():
    rng = np.random.default_rng(30)
    with pytest.raises(InputError, match="at least one attention layer"):
        am.rollout([])
    with pytest.raises(InputError, match=r"residual must be in \[0, 1\]"):
        am.rollout([attention_maps(rng, 1, 1, 3)], residual=1.5)
    with pytest.raises(InputError, match="attention layer 1 has shape"):
        am.rollout([attention_maps(rng, 1, 2, 3), attention_maps(rng, 1, 2, 4)])


@pytest.mark.parametrize("heads", [None, 0, 3, 5, -2])
def test_value_relation_rejects_bad_heads(heads):
    with pytest.raises(InputError, match="need heads= that divides 8"):
        am.value_relation(np.ones((1, 3, 8)), heads=heads)


def test_value_relation_rejects_bad_shapes():
    with pytest.raises(InputError, match=r"values must be \[N, H, T, d\]"):
        am.value_relation(np.ones((3, 8)))


def test_token_positions_rejects_a_grid_that_does_not_fit():
    with pytest.raises(InputError, match="4×4 patch grid plus 0 prefix tokens is 16 tokens, but the attention maps have 17"):
        am.token_positions(17, grid=(4, 4))
    with pytest.raises(InputError, match="plus 1 prefix tokens is 17 tokens"):
        am.token_positions(16, grid=(4, 4), prefix=1)


def test_attention_transfer_rejects_bad_input():
    with pytest.raises(InputError, match=r"conv features \[B, C, H, W\]"):
        am.spatial_attention(torch.ones(2, 3, 4))
    with pytest.raises(InputError, match="p must be positive"):
        am.spatial_attention(torch.ones(1, 2, 3, 3), p=0)
    with pytest.raises(InputError, match="same N"):
        am.at_distance(np.ones((2, 3, 3)), np.ones((3, 3, 3)))
    with pytest.raises(InputError, match=r"\[N, h, w\]"):
        am.at_distance(np.ones((2, 1, 3, 3)), np.ones((2, 1, 3, 3)))
