"""The Gram-terms engine under MinibatchCKA: block triangles, ⟨K, L⟩ in chunks and HSIC of every pair, against
float64 references written here (full Gram matrices, Song et al.'s formula term by term)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hsic_reference import ref_gram, ref_hsic_biased, ref_hsic_unbiased
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.errors import InputError
from kdviz.metrics import gram_terms as gt
from kdviz.metrics.features import MinibatchCKA


def ref_hsic(k, m, unbiased):
    return ref_hsic_unbiased(k, m) if unbiased else ref_hsic_biased(k, m)


@pytest.mark.parametrize("n, rows", [(5, 256), (37, 4), (40, 10), (1030, 256)])
def test_the_block_layout_covers_the_lower_triangle_once_and_the_diagonal_blocks_whole(n, rows):
    layout = gt.BlockLayout.for_samples(n, rows)
    assert layout.edges[0] == 0 and layout.edges[-1] == n and list(layout.edges) == sorted(set(layout.edges))
    assert len(layout.edges) - 1 == max(1, min(gt.MAX_BLOCKS, n // rows))
    sizes = np.diff(layout.edges)
    assert layout.split == int((sizes**2).sum())
    assert layout.size == (n * n + int((sizes**2).sum())) // 2  # strict lower blocks + whole diagonal blocks
    x = torch.from_numpy(np.random.default_rng(n).normal(size=(n, 3)))
    out, diagonal = torch.empty(layout.size, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    layout.write(x, out, diagonal)
    full = (x @ x.T).numpy()
    np.testing.assert_allclose(diagonal.numpy(), np.diag(full), rtol=1e-12)
    # each block's entries, read back from the flat buffer, are the Gram's entries at those rows and columns
    start, seen = 0, np.zeros((n, n), dtype=int)
    blocks = [(a, b, a, b) for a, b in zip(layout.edges, layout.edges[1:], strict=False)]
    blocks += [(a, b, 0, a) for a, b in zip(layout.edges[1:], layout.edges[2:], strict=False)]
    for r0, r1, c0, c1 in blocks:
        size = (r1 - r0) * (c1 - c0)
        np.testing.assert_allclose(out[start:start + size].view(r1 - r0, c1 - c0).numpy(), full[r0:r1, c0:c1], rtol=1e-12)
        seen[r0:r1, c0:c1] += 1
        start += size
    assert start == layout.size
    block_of = np.searchsorted(layout.edges, np.arange(n), side="right") - 1
    same_block = block_of[:, None] == block_of[None, :]
    assert (np.tril(seen, -1) == np.tril(np.ones_like(seen), -1)).all() and (np.diag(seen) == 1).all()
    assert (np.triu(seen, 1) == np.triu(same_block, 1)).all()  # above the diagonal: only inside diagonal blocks


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 70), rows=st.integers(1, 40), unbiased=st.booleans(),
       paired=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]), offset=st.sampled_from([0.0, 500.0]))
def test_hsic_of_every_pair_equals_the_float64_reference(seed, n, rows, unbiased, paired, dtype, offset):
    """Any number of blocks (uneven ones too), both estimators, both precisions, with and without a +500 offset."""
    rng = np.random.default_rng(seed)
    left = [rng.normal(size=(n, 3)), rng.normal(size=(n, 17))]
    right = [left[1][:, :2] @ rng.normal(size=(2, 6)) + 0.3 * rng.normal(size=(n, 6)), rng.normal(size=(n, 4, 2))]
    left, right = ([(x + offset).astype(dtype) for x in model] for model in (left, right))  # the reference sees these
    builder = gt.GramBuilder(rows_per_block=rows)
    a, b = builder.terms("left", left, n), builder.terms("right", right, n)
    got = gt.hsic_from_terms(a, b, n, unbiased=unbiased, paired=paired).numpy()
    pairs = [(0, 0), (1, 1)] if paired else [(i, j) for i in range(2) for j in range(2)]
    for i, j in pairs:
        k, m = ref_gram(left[i]), ref_gram(right[j])
        expected = ref_hsic(k, m, unbiased)
        scale = np.sqrt(ref_hsic(k, k, unbiased) * ref_hsic(m, m, unbiased))  # CKA's denominator
        # float32 Gram products: the debiased estimator's cancellation magnifies their rounding at a handful of samples
        tolerance = 1e-10 if dtype == np.float64 else (2e-4 if n < 16 else 1e-5)
        value = got[i] if paired else got[i, j]
        assert abs(value - expected) <= tolerance * scale, (i, j, value, expected, scale)


def test_minibatch_cka_over_blocks_equals_the_reference_at_a_real_batch_size():
    """n = 600 is cut into four row blocks by default: the same CKA as the float64 reference, float32 input."""
    rng = np.random.default_rng(11)
    latent = rng.normal(size=(600, 16))
    teacher = [np.maximum(latent @ rng.normal(size=(16, d)), 0) + 0.5 * rng.normal(size=(600, d)) for d in (40, 90)]
    student = [np.tanh(latent @ rng.normal(size=(16, 30)))]
    mb = MinibatchCKA(2, 1)
    mb.update([t.astype(np.float32) for t in teacher], [s.astype(np.float32) for s in student])
    assert len(mb._grams.terms("teacher", teacher, 600).layout.edges) == 5
    result = mb.result()
    for i, t in enumerate(teacher):
        k, m = ref_gram(t), ref_gram(student[0])
        expected = ref_hsic(k, m, True) / np.sqrt(ref_hsic(k, k, True) * ref_hsic(m, m, True))
        assert result["cross"][i, 0] == pytest.approx(expected, abs=1e-6)


def test_half_precision_features_are_raised_to_float32_and_gradients_are_left_alone():
    rng = np.random.default_rng(12)
    x = torch.from_numpy(rng.normal(size=(32, 8)).astype(np.float32)).requires_grad_()
    builder = gt.GramBuilder()
    half = builder.terms("half", [x.detach().to(torch.bfloat16)], 32)
    assert half.blocks.dtype == torch.float32
    full = builder.terms("full", [x], 32)  # a tensor that requires grad is read, not differentiated
    np.testing.assert_allclose(full.diagonal[0].numpy(), ref_gram(x.detach().numpy()).diagonal(), rtol=1e-5)
    assert x.grad is None


def test_a_non_finite_feature_names_its_sample():
    x = np.ones((6, 3), dtype=np.float32)
    x[2, 0] = np.inf
    with pytest.raises(InputError, match=r"sample index \[2\]"):
        gt.GramBuilder().terms("teacher", [x], 6)
