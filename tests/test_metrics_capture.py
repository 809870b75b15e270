"""The formulas capture relies on, against independent float64 references, plus hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax, rel_entr, softmax

from kdviz.errors import InputError
from kdviz.metrics import logits as lm
from kdviz.metrics.attention import spatial_attention

logit_values = st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=64)


def logit_pairs(n_max: int = 6, c_max: int = 12):
    return st.integers(1, n_max).flatmap(
        lambda n: st.integers(2, c_max).flatmap(
            lambda c: st.tuples(arrays(np.float64, (n, c), elements=logit_values), arrays(np.float64, (n, c), elements=logit_values))
        )
    )


@given(logit_pairs(), st.floats(0.5, 8))
@settings(max_examples=60, deadline=None)
def test_kl_matches_scipy_reference_and_is_non_negative(pair, T):
    z_t, z_s = pair
    ours = lm.kl(z_t, z_s, T)
    reference = rel_entr(softmax(z_t / T, axis=-1), softmax(z_s / T, axis=-1)).sum(-1)
    np.testing.assert_allclose(ours, reference, rtol=1e-7, atol=1e-9)
    assert (ours >= -1e-12).all()
    np.testing.assert_allclose(lm.reverse_kl(z_t, z_s, T), lm.kl(z_s, z_t, T), rtol=1e-12, atol=1e-15)


@given(arrays(np.float64, (4, 7), elements=logit_values), st.floats(0.5, 8))
@settings(max_examples=40, deadline=None)
def test_kl_of_a_distribution_with_itself_is_zero(z, T):
    np.testing.assert_allclose(lm.kl(z, z, T), 0.0, atol=1e-12)


def test_t2_scale_is_the_kd_loss_convention():
    rng = np.random.default_rng(0)
    z_t, z_s = rng.normal(size=(5, 10)), rng.normal(size=(5, 10))
    np.testing.assert_allclose(lm.kl(z_t, z_s, 4.0, t2_scale=True), 16 * lm.kl(z_t, z_s, 4.0))
    # the same number torch's KD recipe gives per sample: F.kl_div(log p_s, log p_t, log_target=True) * T²
    torch_kd = torch.nn.functional.kl_div(
        torch.log_softmax(torch.tensor(z_s) / 4, -1), torch.log_softmax(torch.tensor(z_t) / 4, -1), log_target=True, reduction="batchmean"
    ) * 16
    assert float(torch_kd) == pytest.approx(float(lm.kl(z_t, z_s, 4.0, t2_scale=True).mean()), rel=1e-10)


def test_entropy_against_reference_and_tensor_in_tensor_out():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 9)) * 3
    p = softmax(z, axis=-1)
    np.testing.assert_allclose(lm.entropy(z), -(p * np.log(p)).sum(-1), rtol=1e-10)
    out = lm.kl(torch.tensor(z), torch.tensor(z[::-1].copy()))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_extreme_logits_stay_finite():
    z_t = np.array([[1000.0, 0.0, -1000.0]])
    z_s = np.array([[-1000.0, 0.0, 1000.0]])
    value = lm.kl(z_t, z_s)
    assert np.isfinite(value).all() and value[0] == pytest.approx(2000.0)


def test_bad_inputs_raise_kdviz_errors():
    with pytest.raises(InputError, match=r"\(2, 3\).*\(2, 4\)"):
        lm.kl(np.zeros((2, 3)), np.zeros((2, 4)))
    bad = np.zeros((3, 4))
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match=r"sample index \[2\]"):
        lm.kl(bad, np.zeros((3, 4)))
    with pytest.raises(InputError, match="temperature"):
        lm.kl(np.zeros((1, 2)), np.zeros((1, 2)), T=0)


def test_token_statistics_match_float64_reference():
    rng = np.random.default_rng(2)
    z_t, z_s = rng.normal(size=(2, 5, 30)) * 2, rng.normal(size=(2, 5, 30)) * 2
    targets = rng.integers(0, 30, size=(2, 5))
    targets[1, 4] = -100
    stats = lm.token_statistics(torch.tensor(z_t, dtype=torch.float32), torch.tensor(z_s, dtype=torch.float32), torch.tensor(targets), 4)
    lt, ls = log_softmax(z_t, -1), log_softmax(z_s, -1)
    np.testing.assert_allclose(stats["kl"].numpy(), rel_entr(np.exp(lt), np.exp(ls)).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(stats["student_entropy"].numpy(), -(np.exp(ls) * ls).sum(-1), rtol=1e-5)
    true = np.exp(np.take_along_axis(lt, np.maximum(targets, 0)[..., None], -1)[..., 0])
    true[1, 4] = 0.0
    np.testing.assert_allclose(stats["teacher_true_prob"].numpy(), true, rtol=1e-5)
    np.testing.assert_array_equal(stats["student_topk_ids"].numpy(), np.argsort(-ls, -1)[..., :4])


def test_accuracy_and_perplexity():
    z = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert lm.correct_count(z, [0, 1, 1]) == (2, 3)
    assert lm.accuracy(z, [0, -100, 1]) == 0.5  # negative labels are ignored
    expected = np.exp(-(np.log(0.5) + np.log(0.25)) / 2)
    assert lm.perplexity(np.array([0.5, 0.25, 0.9]), np.array([True, True, False])) == pytest.approx(expected)


def reference_spatial(fmap: np.ndarray, p: float) -> np.ndarray:
    q = np.mean(np.abs(fmap) ** p, axis=1)
    flat = q.reshape(len(q), -1)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(q.shape)


@given(arrays(np.float64, (2, 3, 4, 5), elements=st.floats(-5, 5, width=64)).filter(lambda a: (np.abs(a).sum(axis=(1, 2, 3)) > 1e-3).all()),
       st.sampled_from([1.0, 2.0, 3.0]))
@settings(max_examples=40, deadline=None)
def test_spatial_attention_matches_the_at_formula_with_abs(fmap, p):
    ours = spatial_attention(torch.tensor(fmap), p).numpy()
    np.testing.assert_allclose(ours, reference_spatial(fmap, p), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours.reshape(2, -1), axis=1), 1.0, rtol=1e-5)


def test_spatial_attention_resamples_to_a_common_size_and_rejects_bad_shapes():
    fmap = torch.rand(2, 4, 8, 8)
    resized = spatial_attention(fmap, 2, size=(4, 4))
    assert resized.shape == (2, 4, 4)
    np.testing.assert_allclose(resized.reshape(2, -1).norm(dim=1).numpy(), 1.0, rtol=1e-5)
    with pytest.raises(InputError, match=r"\[B, C, H, W\]"):
        spatial_attention(torch.rand(2, 4, 8))
