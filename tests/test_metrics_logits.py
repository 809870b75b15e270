"""Logit metrics against independent float64 references written here, plus hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import rel_entr, softmax
from scipy.stats import kendalltau, spearmanr

from kdviz.errors import InputError
from kdviz.metrics import calibration, classwise
from kdviz.metrics import logits as lm

finite = st.floats(-20, 20, allow_nan=False, allow_infinity=False, width=64)


def pair_strategy(n_max=5, c_min=2, c_max=10):
    return st.integers(1, n_max).flatmap(
        lambda n: st.integers(c_min, c_max).flatmap(
            lambda c: st.tuples(arrays(np.float64, (n, c), elements=finite), arrays(np.float64, (n, c), elements=finite))
        )
    )


def ref_kl(p, q):
    return rel_entr(p, q).sum(-1)


def ref_renyi(p, q, alpha):
    """D_α(p‖q) = log Σ p^α q^(1−α) / (α − 1), from probabilities."""
    return np.log((p**alpha * q ** (1 - alpha)).sum(-1)) / (alpha - 1)


def reference_measures(z_t, z_s, T, beta, lam, alpha=0.5):
    """Straightforward float64 formulas, probabilities first (no log-space tricks)."""
    pt, ps = softmax(z_t / T, axis=-1), softmax(z_s / T, axis=-1)
    m = 0.5 * (pt + ps)
    mb = beta * pt + (1 - beta) * ps
    return {
        "kl": ref_kl(pt, ps),
        "reverse_kl": ref_kl(ps, pt),
        "js": 0.5 * ref_kl(pt, m) + 0.5 * ref_kl(ps, m),
        "jsd": (beta * ref_kl(pt, mb) + (1 - beta) * ref_kl(ps, mb)) / (beta * (1 - beta)),
        "skew_kl": ref_kl(pt, lam * pt + (1 - lam) * ps),
        "tv": 0.5 * np.abs(pt - ps).sum(-1),
        "hellinger": np.linalg.norm(np.sqrt(pt) - np.sqrt(ps), axis=-1) / np.sqrt(2),
        "renyi": ref_renyi(pt, ps, alpha),
        "teacher_entropy": -(pt * np.log(pt)).sum(-1),
        "student_entropy": -(ps * np.log(ps)).sum(-1),
    }


@given(pair_strategy(), st.floats(0.5, 6), st.floats(0.1, 0.9), st.floats(0.05, 0.9),
       st.one_of(st.floats(0.1, 0.9), st.floats(1.1, 4)))
@settings(max_examples=80, deadline=None)
def test_every_measure_matches_the_float64_reference(pair, T, beta, lam, alpha):
    z_t, z_s = pair
    ours = lm.divergences(z_t, z_s, T, beta=beta, lam=lam, alpha=alpha)
    reference = reference_measures(z_t, z_s, T, beta, lam, alpha)
    for name in lm.MEASURES:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-7, atol=1e-10, err_msg=name)


@given(pair_strategy(), st.floats(0.2, 10))
@settings(max_examples=60, deadline=None)
def test_divergence_properties(pair, T):
    z_t, z_s = pair
    d = lm.divergences(z_t, z_s, T)
    for name in ("kl", "reverse_kl", "js", "jsd", "skew_kl", "tv", "hellinger"):
        assert (d[name] >= -1e-12).all(), name
    assert (d["js"] <= np.log(2) + 1e-12).all()
    assert (d["tv"] <= 1 + 1e-12).all() and (d["hellinger"] <= 1 + 1e-12).all()
    np.testing.assert_allclose(lm.js(z_t, z_s, T), lm.js(z_s, z_t, T), atol=1e-12)  # symmetric


@given(arrays(np.float64, (3, 6), elements=finite))
@settings(max_examples=40, deadline=None)
def test_kl_is_zero_iff_distributions_are_equal(z):
    np.testing.assert_allclose(lm.kl(z, z), 0.0, atol=1e-12)
    shifted = z + 7.0  # softmax is shift-invariant: same distribution
    np.testing.assert_allclose(lm.kl(z, shifted), 0.0, atol=1e-10)
    other = z.copy()
    other[:, 0] += 3.0
    # Pinsker: KL ≥ 2·TV², so KL is positive wherever the distributions differ measurably. (Saturated rows such as
    # [19, −19, …] vs [22, −19, …] differ by ~1e-16, below float64 resolution; there both are honestly 0.)
    divergence, tv = lm.kl(z, other), lm.tv(z, other)
    assert (divergence >= 2 * tv**2 - 1e-15).all()
    assert (divergence[tv > 1e-6] > 0).all()


@given(pair_strategy(n_max=3, c_max=6))
@settings(max_examples=30, deadline=None)
def test_high_temperature_drives_kl_to_zero(pair):
    z_t, z_s = pair
    # KL ≈ Var_p(Δz)/(2T²) once T ≫ the logit gaps (here at most 40): it falls towards 0 like 1/T²
    values = [lm.kl(z_t, z_s, T).max() for T in (1e3, 1e4, 1e5)]
    assert values[-1] < 1e-7
    assert values[0] + 1e-15 >= values[1] and values[1] + 1e-15 >= values[2]  # equal distributions give ±1e-17 noise


def test_generalised_jsd_limits_are_forward_and_reverse_kl():
    rng = np.random.default_rng(0)
    z_t, z_s = rng.normal(size=(8, 12)) * 2, rng.normal(size=(8, 12)) * 2
    np.testing.assert_allclose(lm.jsd(z_t, z_s, beta=0.0), lm.kl(z_t, z_s), rtol=1e-12)
    np.testing.assert_allclose(lm.jsd(z_t, z_s, beta=1.0), lm.reverse_kl(z_t, z_s), rtol=1e-12)
    np.testing.assert_allclose(lm.jsd(z_t, z_s, beta=1e-6), lm.kl(z_t, z_s), rtol=1e-4)
    np.testing.assert_allclose(lm.jsd(z_t, z_s, beta=1 - 1e-6), lm.reverse_kl(z_t, z_s), rtol=1e-4)
    np.testing.assert_allclose(lm.skew_kl(z_t, z_s, lam=0.0), lm.kl(z_t, z_s), rtol=1e-12)


def test_renyi_limits_and_special_orders():
    rng = np.random.default_rng(4)
    z_t, z_s = rng.normal(size=(8, 12)) * 2, rng.normal(size=(8, 12)) * 2
    pt, ps = softmax(z_t, axis=-1), softmax(z_s, axis=-1)
    np.testing.assert_allclose(lm.renyi(z_t, z_s, alpha=1.0), lm.kl(z_t, z_s), rtol=1e-12)  # α = 1 is KL
    np.testing.assert_allclose(lm.renyi(z_t, z_s, alpha=1 + 1e-6), lm.kl(z_t, z_s), rtol=1e-4)  # and its limit
    bhattacharyya = np.sqrt(pt * ps).sum(-1)
    np.testing.assert_allclose(lm.renyi(z_t, z_s, alpha=0.5), -2 * np.log(bhattacharyya), rtol=1e-10)
    np.testing.assert_allclose(lm.renyi(z_t, z_s, alpha=2.0), np.log((pt**2 / ps).sum(-1)), rtol=1e-10)  # log(1 + χ²)
    np.testing.assert_allclose(lm.renyi(z_t, z_s, alpha=0.5, t2_scale=True, T=3.0), 9 * lm.renyi(z_t, z_s, 3.0, alpha=0.5))
    with pytest.raises(InputError, match="Rényi α must be positive"):
        lm.renyi(z_t, z_s, alpha=0.0)


@given(pair_strategy(), st.floats(0.2, 5), st.floats(0.1, 3), st.floats(0.1, 3))
@settings(max_examples=60, deadline=None)
def test_renyi_is_nonnegative_and_grows_with_its_order(pair, T, a, b):
    z_t, z_s = pair
    low, high = sorted((a, b))
    d_low, d_high = lm.renyi(z_t, z_s, T, alpha=low), lm.renyi(z_t, z_s, T, alpha=high)
    assert (d_low >= -1e-12).all()
    assert (d_high + 1e-9 >= d_low).all()  # D_α is non-decreasing in α
    perm = np.random.default_rng(0).permutation(z_t.shape[1])  # relabelling the classes changes nothing
    np.testing.assert_allclose(lm.renyi(z_t[:, perm], z_s[:, perm], T, alpha=low), d_low, atol=1e-10)


def test_soft_cross_entropy_is_not_kl():
    rng = np.random.default_rng(1)
    z_t, z_s = rng.normal(size=(5, 9)), rng.normal(size=(5, 9))
    pt, ps = softmax(z_t, -1), softmax(z_s, -1)
    soft_ce = -(pt * np.log(ps)).sum(-1)
    np.testing.assert_allclose(soft_ce - lm.entropy(z_t), lm.kl(z_t, z_s), rtol=1e-10)  # CE = KL + H(p_t)


def test_sequences_with_mask_give_per_token_values_and_nan_where_masked():
    rng = np.random.default_rng(2)
    z_t, z_s = rng.normal(size=(2, 4, 7)), rng.normal(size=(2, 4, 7))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)
    values = lm.kl(z_t, z_s, 2.0, mask=mask)
    assert values.shape == (2, 4)
    assert np.isnan(values[~mask]).all()
    np.testing.assert_allclose(values[mask], ref_kl(softmax(z_t / 2, -1), softmax(z_s / 2, -1))[mask], rtol=1e-10)
    assert lm.dataset_mean(values) == pytest.approx(np.mean(values[mask]))
    with pytest.raises(InputError, match="mask must have shape"):
        lm.kl(z_t, z_s, mask=mask[:, :3])


def test_torch_in_torch_out_and_t2_scale():
    z_t, z_s = torch.randn(4, 5), torch.randn(4, 5)
    out = lm.kl(z_t, z_s, 3.0, t2_scale=True)
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, 9 * lm.kl(z_t, z_s, 3.0))


def test_errors_name_sample_and_shapes():
    bad = np.zeros((4, 3))
    bad[3, 0] = np.inf
    with pytest.raises(InputError, match=r"sample index \[3\]"):
        lm.divergences(bad, np.zeros((4, 3)))
    with pytest.raises(InputError, match=r"\(4, 3\).*\(4, 5\)"):
        lm.tv(np.zeros((4, 3)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="unknown measures"):
        lm.divergences(np.zeros((1, 2)), np.zeros((1, 2)), measures=["kll"])


# ---- DKD ----
@given(pair_strategy(c_min=2, c_max=10), st.floats(0.5, 8), st.data())
@settings(max_examples=80, deadline=None)
def test_dkd_identity_kl_equals_tckd_plus_weighted_nckd(pair, T, data):
    z_t, z_s = pair
    target = np.array(data.draw(st.lists(st.integers(0, z_t.shape[1] - 1), min_size=len(z_t), max_size=len(z_t))))
    parts = lm.dkd_parts(z_t, z_s, target, T)
    np.testing.assert_allclose(parts["tckd"] + parts["nckd_weight"] * parts["nckd"], parts["kl"], atol=1e-6)
    np.testing.assert_allclose(parts["kl"], lm.kl(z_t, z_s, T), rtol=1e-9, atol=1e-12)
    assert np.isfinite(parts["nckd"]).all() and (parts["tckd"] >= -1e-12).all() and (parts["nckd"] >= -1e-12).all()


def test_dkd_parts_against_reference():
    rng = np.random.default_rng(3)
    z_t, z_s = rng.normal(size=(6, 5)) * 2, rng.normal(size=(6, 5)) * 2
    y = rng.integers(0, 5, 6)
    parts = lm.dkd_parts(z_t, z_s, y, T=2.0)
    pt, ps = softmax(z_t / 2, -1), softmax(z_s / 2, -1)
    for i in range(6):
        b_t = np.array([pt[i, y[i]], 1 - pt[i, y[i]]])
        b_s = np.array([ps[i, y[i]], 1 - ps[i, y[i]]])
        rest = np.arange(5) != y[i]
        hat_t, hat_s = pt[i, rest] / pt[i, rest].sum(), ps[i, rest] / ps[i, rest].sum()
        assert parts["tckd"][i] == pytest.approx(ref_kl(b_t, b_s), rel=1e-9)
        assert parts["nckd"][i] == pytest.approx(ref_kl(hat_t, hat_s), rel=1e-9, abs=1e-14)


def test_dkd_binary_task_gives_zero_nckd_not_nan():
    parts = lm.dkd_parts(np.array([[2.0, -1.0]]), np.array([[0.5, 0.3]]), [0])
    assert parts["binary"] is True
    assert parts["nckd"][0] == 0.0
    assert parts["tckd"][0] == pytest.approx(parts["kl"][0])


def test_dkd_rejects_bad_targets():
    with pytest.raises(InputError, match="class index"):
        lm.dkd_parts(np.zeros((2, 3)), np.zeros((2, 3)), [0, 3])


# ---- agreement ----
def test_topk_agreement_against_reference():
    rng = np.random.default_rng(4)
    z_t, z_s = rng.normal(size=(50, 10)), rng.normal(size=(50, 10))
    out = lm.topk_agreement(z_t, z_s, k=3)
    top_t, top_s = np.argsort(-z_t, 1)[:, :3], np.argsort(-z_s, 1)[:, :3]
    expected = [len(set(a) & set(b)) / 3 for a, b in zip(top_t, top_s, strict=True)]
    np.testing.assert_allclose(out["overlap"], expected)
    np.testing.assert_array_equal(out["top1"], (z_t.argmax(1) == z_s.argmax(1)).astype(float))
    same = lm.topk_agreement(z_t, z_t, k=4)
    assert (same["top1"] == 1).all() and (same["overlap"] == 1).all()


def test_rank_agreement_matches_scipy():
    rng = np.random.default_rng(5)
    z_t, z_s = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    z_s[0] = np.round(z_s[0])  # ties
    y = rng.integers(0, 8, 20)
    out = lm.rank_agreement(z_t, z_s, y)
    for i in range(20):
        rest = np.arange(8) != y[i]
        assert out["spearman"][i] == pytest.approx(spearmanr(z_t[i, rest], z_s[i, rest]).statistic, abs=1e-12)
        assert out["kendall"][i] == pytest.approx(kendalltau(z_t[i, rest], z_s[i, rest]).statistic, abs=1e-12)
    with pytest.raises(InputError, match="at least 3 classes"):
        lm.rank_agreement(np.zeros((2, 2)), np.zeros((2, 2)), [0, 1])


# ---- calibration ----
def reference_ece(probs, labels, n_bins=15, logits=None):
    """ECE from probabilities [N, C]; the predicted class is the argmax of the ``logits`` when given (the same class
    mathematically, but exact where the probabilities round two different logits to one value)."""
    conf, pred = probs.max(1), (probs if logits is None else logits).argmax(1)
    total, worst = 0.0, 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
            total += in_bin.mean() * gap
            worst = max(worst, gap)
    return total, worst


@given(st.integers(5, 60).flatmap(lambda n: st.tuples(arrays(np.float64, (n, 4), elements=st.floats(-6, 6)),
                                                      arrays(np.int64, (n,), elements=st.integers(0, 3)))),
       st.floats(0.5, 5))
@settings(max_examples=50, deadline=None)
def test_ece_matches_reference(data, T):
    z, y = data
    result = calibration.ece(z, y, T)
    expected_ece, expected_mce = reference_ece(softmax(z / T, -1), y, logits=z)
    assert result["ece"] == pytest.approx(expected_ece, abs=1e-12)
    assert result["mce"] == pytest.approx(expected_mce, abs=1e-12)
    assert result["count"].sum() == len(y)
    assert 0 <= result["ece"] <= result["mce"] + 1e-12


def test_ece_predicts_the_argmax_of_the_logits_even_below_softmax_resolution():
    # found by hypothesis: −2.2e-16 against 0 is lost in log-softmax at T=3, where the tie went to class 0
    z = np.array([[-2.220446049250313e-16, 0.0, 0.0, 0.0]] * 5)
    y = np.zeros(5, dtype=np.int64)
    result = calibration.ece(z, y, 3.0)
    assert result["ece"] == pytest.approx(reference_ece(softmax(z / 3.0, -1), y, logits=z)[0], abs=1e-12)
    assert result["ece"] == pytest.approx(0.25, abs=1e-12)  # class 1 is predicted, with confidence 1/4: all wrong


def test_ece_bins_are_left_open_right_closed():
    # confidence exactly 1/15 -> first bin; exactly 1 -> last bin
    z = np.log(np.array([[1.0] * 15, [1.0] + [0.0] * 14]) + 1e-300)
    result = calibration.ece(z, np.array([0, 0]))
    assert result["count"][0] == 1 and result["count"][-1] == 1
    assert lm.ece is calibration.ece


# ---- class level ----
def test_class_level_summaries():
    z_t = np.array([[3.0, 0, 0], [0, 3, 0], [0, 3, 0], [3, 0, 0]])
    z_s = np.array([[3.0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]])
    y = np.array([0, 1, 1, 2])
    np.testing.assert_array_equal(classwise.agreement_matrix(z_t, z_s), [[1, 0, 1], [1, 1, 0], [0, 0, 0]])
    quadrants = classwise.correctness_quadrants(z_t, z_s, y)
    assert quadrants == {"both right": 2, "teacher right, student wrong": 1, "teacher wrong, student right": 1, "both wrong": 0}
    np.testing.assert_allclose(classwise.per_class_mean([1.0, 2.0, 4.0, 8.0], y, 4), [1.0, 3.0, 8.0, np.nan])
    diff = classwise.class_mean_logit_difference(z_t, z_s, y)
    np.testing.assert_allclose(diff[1], ((z_t[1] - z_s[1]) + (z_t[2] - z_s[2])) / 2)
    np.testing.assert_allclose(diff[2], z_t[3] - z_s[3])


@given(arrays(np.float64, (12, 5), elements=finite), arrays(np.int64, (12,), elements=st.integers(0, 4)))
@settings(max_examples=30, deadline=None)
def test_class_mean_logit_difference_matches_loop(z, y):
    assume(len(np.unique(y)) > 1)
    z_s = z[::-1].copy()
    diff = classwise.class_mean_logit_difference(z, z_s, y)
    for c in range(5):
        rows = y == c
        if rows.any():
            np.testing.assert_allclose(diff[c], (z[rows] - z_s[rows]).mean(0), atol=1e-12)
        else:
            assert np.isnan(diff[c]).all()


def test_divergences_are_differentiable_for_kd_losses():
    z_t = torch.randn(6, 5, dtype=torch.float64)
    z_s = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    T = 2.0
    lm.kl(z_t, z_s, T, t2_scale=True).sum().backward()
    # d/dz_s of T²·KL(p_t‖p_s) at temperature T is T·(p_s − p_t)
    expected = T * (torch.softmax(z_s.detach() / T, -1) - torch.softmax(z_t / T, -1))
    assert torch.allclose(z_s.grad, expected, atol=1e-12)
    assert torch.autograd.gradcheck(lambda s: lm.js(z_t, s).sum(), (z_s.detach().clone().requires_grad_(),))
