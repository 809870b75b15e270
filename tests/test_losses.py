"""Distillation losses against float64 reference code written here, and their known identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.errors import InputError
from kdviz.losses import CE, DKD, KD, AttentionKL, AttentionTransfer, Hint, StepOutputs
from kdviz.metrics import attention as am


def softmax(row: list[float], T: float) -> list[float]:
    top = max(row)
    exps = [math.exp((v - top) / T) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def ref_kl(p: list[float], q: list[float]) -> float:
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True) if a > 0)


def ref_kd(z_t: np.ndarray, z_s: np.ndarray, y: np.ndarray, T: float, alpha: float) -> tuple[float, float]:
    kl = np.mean([ref_kl(softmax(list(t), T), softmax(list(s), T)) for t, s in zip(z_t, z_s, strict=True)])
    ce = np.mean([-math.log(softmax(list(s), 1.0)[c]) for s, c in zip(z_s, y, strict=True)])
    return alpha * ce, (1 - alpha) * T * T * kl


def ref_dkd(z_t: np.ndarray, z_s: np.ndarray, y: np.ndarray, T: float) -> tuple[float, float]:
    tckd, nckd = [], []
    for t, s, c in zip(z_t, z_s, y, strict=True):
        pt, ps = softmax(list(t), T), softmax(list(s), T)
        tckd.append(ref_kl([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]]))
        rest_t, rest_s = [p for i, p in enumerate(pt) if i != c], [p for i, p in enumerate(ps) if i != c]
        # p̂ = non-target probabilities over their own sum (dividing by 1 − p_y cancels catastrophically when p_y ≈ 1;
        # hypothesis found NCKD = −1.5e-10 that way for two classes, where it is exactly 0)
        hat_t, hat_s = [p / sum(rest_t) for p in rest_t], [p / sum(rest_s) for p in rest_s]
        nckd.append(ref_kl(hat_t, hat_s))
    return float(np.mean(tckd)), float(np.mean(nckd))


logits = st.integers(2, 6).flatmap(lambda c: st.tuples(
    st.lists(st.lists(st.floats(-6, 6), min_size=c, max_size=c), min_size=1, max_size=5),
    st.just(c)))


@settings(max_examples=60, deadline=None)
@given(logits, st.data(), st.floats(0.5, 8), st.floats(0, 1))
def test_kd_matches_the_hinton_formula(z, data, T, alpha):
    rows, c = z
    z_t = np.array(rows)
    z_s = np.array(data.draw(st.lists(st.lists(st.floats(-6, 6), min_size=c, max_size=c), min_size=len(rows), max_size=len(rows))))
    y = np.array([data.draw(st.integers(0, c - 1)) for _ in rows])
    out = KD(T=T, alpha=alpha)(StepOutputs(torch.tensor(z_t), torch.tensor(z_s), torch.tensor(y)))
    ce, kd = ref_kd(z_t, z_s, y, T, alpha)
    assert float(out["kd"]) == pytest.approx(kd, rel=1e-9, abs=1e-12)
    assert float(out.get("ce", torch.tensor(0.0))) == pytest.approx(ce, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(logits, st.data(), st.floats(0.5, 8))
def test_dkd_matches_its_reference_and_ce_is_cross_entropy(z, data, T):
    rows, c = z
    z_t = np.array(rows)
    z_s = np.array(data.draw(st.lists(st.lists(st.floats(-6, 6), min_size=c, max_size=c), min_size=len(rows), max_size=len(rows))))
    y = np.array([data.draw(st.integers(0, c - 1)) for _ in rows])
    out = DKD(alpha=1.5, beta=3.0, T=T)(StepOutputs(torch.tensor(z_t), torch.tensor(z_s), torch.tensor(y)))
    tckd, nckd = ref_dkd(z_t, z_s, y, T)
    assert float(out["tckd"]) == pytest.approx(1.5 * T * T * tckd, rel=1e-8, abs=1e-10)
    assert float(out["nckd"]) == pytest.approx(3.0 * T * T * nckd, rel=1e-8, abs=1e-10)
    ce = CE()(StepOutputs(torch.tensor(z_t), torch.tensor(z_s), torch.tensor(y)))["ce"]
    assert float(ce) == pytest.approx(ref_kd(z_t, z_s, y, 1.0, 1.0)[0], rel=1e-9)


def test_dkd_equals_kd_when_alpha_is_1_and_beta_is_one_minus_the_teachers_target_probability():
    """KL = TCKD + (1 − p_t,y)·NCKD: with every sample's p_t,y equal, DKD(1, 1 − p_t,y) is KD's KL term."""
    torch.manual_seed(0)
    n, c, T = 16, 7, 3.0
    y = torch.randint(0, c, (n,))
    base = torch.randn(c, dtype=torch.float64)
    z_t = torch.stack([torch.cat([base[:1], base[1:][torch.randperm(c - 1)]]) for _ in range(n)])  # one vector, permuted,
    z_t = torch.stack([row.roll(int(k)) for row, k in zip(z_t, y, strict=True)])  # with base[0] rolled to the target class
    z_s = torch.randn(n, c, dtype=torch.float64)
    p_target = torch.softmax(z_t / T, 1)[torch.arange(n), y]
    assert torch.allclose(p_target, p_target[0])
    beta = float(1 - p_target[0])
    outputs = StepOutputs(z_t, z_s, y)
    dkd = DKD(alpha=1.0, beta=beta, T=T)(outputs)
    kd = KD(T=T, alpha=0.0)(outputs)["kd"]
    assert float(dkd["tckd"] + dkd["nckd"]) == pytest.approx(float(kd), rel=1e-12)


def test_kd_gradient_size_is_roughly_independent_of_temperature():
    """The T² factor: at high T, ∂KL/∂z ≈ (p_s − p_t)/T ≈ (z_s − z_t)/(C·T²), so T²·KL keeps the gradient's size."""
    torch.manual_seed(1)
    z_t, z_s0 = torch.randn(64, 10, dtype=torch.float64), torch.randn(64, 10, dtype=torch.float64)
    norms = {}
    for T in (4.0, 8.0, 16.0):
        z_s = z_s0.clone().requires_grad_(True)
        KD(T=T, alpha=0.0)(StepOutputs(z_t, z_s))["kd"].backward()
        norms[T] = float(z_s.grad.norm())
    assert max(norms.values()) / min(norms.values()) < 1.25
    without = {}
    for T in (4.0, 16.0):
        z_s = z_s0.clone().requires_grad_(True)
        (KD(T=T, alpha=0.0)(StepOutputs(z_t, z_s))["kd"] / T**2).backward()  # the same loss without T²
        without[T] = float(z_s.grad.norm())
    assert without[4.0] / without[16.0] > 10


def test_kd_on_sequences_averages_over_real_tokens():
    torch.manual_seed(2)
    z_t, z_s = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    labels = torch.randint(0, 6, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = KD(T=2.0, alpha=0.3)(StepOutputs(z_t, z_s, labels, mask=mask))
    keep = mask.reshape(-1).bool()
    rows_t, rows_s, y = z_t.reshape(-1, 6)[keep].numpy(), z_s.reshape(-1, 6)[keep].numpy(), labels.reshape(-1)[keep].numpy()
    ce, kd = ref_kd(rows_t, rows_s, y, 2.0, 0.3)
    assert float(out["kd"]) == pytest.approx(kd, rel=1e-9) and float(out["ce"]) == pytest.approx(ce, rel=1e-9)


def test_attention_transfer_matches_the_authors_formula():
    torch.manual_seed(3)
    f_t, f_s = torch.randn(3, 8, 4, 4, dtype=torch.float64), torch.randn(3, 5, 2, 2, dtype=torch.float64)
    out = AttentionTransfer([("a", "b")], p=2, beta=1000.0)(StepOutputs(torch.zeros(3, 2), torch.zeros(3, 2),
                                                                          features_t={"a": f_t}, features_s={"b": f_s}))
    q_t = f_t.abs().pow(2).mean(1)
    q_s = F.interpolate(f_s.abs().pow(2).mean(1, keepdim=True), size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    q_t = q_t.reshape(3, -1) / q_t.reshape(3, -1).norm(dim=1, keepdim=True)
    q_s = q_s.reshape(3, -1) / q_s.reshape(3, -1).norm(dim=1, keepdim=True)
    assert float(out["at"]) == pytest.approx(500.0 * float((q_s - q_t).pow(2).mean()), rel=1e-6)


def test_hint_learns_a_regressor_and_measures_its_error():
    torch.manual_seed(4)
    f_t, f_s = torch.randn(4, 6, 3, 3), torch.randn(4, 2, 3, 3)
    outputs = StepOutputs(torch.zeros(4, 2), torch.zeros(4, 2), features_t={"t": f_t}, features_s={"s": f_s})
    loss = Hint([("t", "s")])
    loss.setup(outputs)
    regressor = loss.regressors[0]
    assert isinstance(regressor, torch.nn.Conv2d) and regressor.in_channels == 2 and regressor.out_channels == 6
    expected = F.mse_loss(regressor(f_s), f_t)
    assert float(loss(outputs)["hint"].detach()) == pytest.approx(float(expected.detach()))
    assert len(list(loss.parameters())) == 2  # the regressor's weight and bias reach the optimizer


def test_attention_kl_is_the_row_kl_averaged_over_heads_and_real_queries():
    torch.manual_seed(5)
    a_t = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), -1)
    a_s = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), -1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = AttentionKL([(0, 0)])(StepOutputs(torch.zeros(2, 2), torch.zeros(2, 2), attentions_t=[a_t], attentions_s=[a_s],
                                            mask=mask))["attention_kl"]
    total, rows = 0.0, 0
    for n in range(2):
        real = int(mask[n].sum())
        for h in range(3):
            for q in range(real):
                t = (a_t[n, h, q, :real] + 1e-8) / (a_t[n, h, q, :real] + 1e-8).sum()
                s = (a_s[n, h, q, :real] + 1e-8) / (a_s[n, h, q, :real] + 1e-8).sum()
                total += ref_kl(t.tolist(), s.tolist())
                rows += 1
    assert float(got) == pytest.approx(total / rows, rel=1e-9)
    matrix = am.head_divergence(a_t, a_s, mask=mask)  # the views' formula gives the same per matched head
    assert float(got) == pytest.approx(float(np.mean(np.diag(matrix))), rel=1e-6)


def test_losses_refuse_what_they_cannot_compute():
    outputs = StepOutputs(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(InputError, match="needs labels"):
        KD(alpha=0.5)(outputs)
    with pytest.raises(InputError, match="T > 0"):
        KD(T=0)
    with pytest.raises(InputError, match="one shape"):
        am.attention_kl(torch.ones(1, 2, 3, 3) / 3, torch.ones(1, 1, 3, 3) / 3)
    with pytest.raises(InputError, match="pairs"):
        AttentionTransfer([])
    assert float(KD(alpha=0.0)(outputs)["kd"]) == 0.0  # no labels needed without the CE term


def _uld_reference(z_t: np.ndarray, z_s: np.ndarray, T: float) -> np.ndarray:
    """ULD in float64 straight from Boizard et al. (2024): sort each softmax row descending, zero-pad the shorter
    vocabulary, sum the absolute differences."""
    def sorted_rows(z: np.ndarray, width: int) -> np.ndarray:
        e = np.exp((z - z.max(-1, keepdims=True)) / T)
        p = -np.sort(-(e / e.sum(-1, keepdims=True)), axis=-1)
        return np.concatenate([p, np.zeros((p.shape[0], width - p.shape[1]))], axis=1)
    width = max(z_t.shape[1], z_s.shape[1])
    return np.abs(sorted_rows(z_t, width) - sorted_rows(z_s, width)).sum(-1)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), v_t=st.integers(1, 40), v_s=st.integers(1, 40), T=st.floats(0.5, 4.0), seed=st.integers(0, 2**31 - 1))
def test_uld_equals_the_float64_reference_is_bounded_and_ignores_relabelling(rows, v_t, v_s, T, seed):
    from kdviz.metrics.sorted_distance import uld_distance

    rng = np.random.default_rng(seed)
    z_t, z_s = rng.normal(0, 3, (rows, v_t)), rng.normal(0, 3, (rows, v_s))
    got = uld_distance(torch.tensor(z_t), torch.tensor(z_s), T).numpy()
    np.testing.assert_allclose(got, _uld_reference(z_t, z_s, T), atol=1e-12)
    assert (got >= 0).all() and (got <= 2 + 1e-12).all()
    # relabelling either vocabulary changes nothing; the same distribution over another vocabulary gives 0
    permuted = torch.tensor(z_s[:, rng.permutation(v_s)])
    np.testing.assert_allclose(uld_distance(torch.tensor(z_t), permuted, T).numpy(), got, atol=1e-12)
    np.testing.assert_allclose(uld_distance(torch.tensor(z_t), torch.tensor(z_t[:, rng.permutation(v_t)]), T).numpy(), 0, atol=1e-12)


def test_uld_loss_averages_aligned_rows_trains_only_the_student_and_refuses_unaligned_rows():
    from kdviz.losses import ULD

    torch.manual_seed(0)
    z_t = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    z_s = torch.randn(2, 5, 17, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss = ULD(T=2.0)(StepOutputs(z_t, z_s, mask=mask))["uld"]
    keep = mask.reshape(-1).bool().numpy()
    expected = _uld_reference(z_t.detach().reshape(-1, 11).numpy()[keep], z_s.detach().reshape(-1, 17).numpy()[keep], 2.0).mean()
    assert math.isclose(loss.item(), expected, rel_tol=1e-12)
    loss.backward()
    assert z_t.grad is None and z_s.grad is not None and z_s.grad.abs().sum() > 0
    with pytest.raises(InputError, match="aligned positions"):
        ULD()(StepOutputs(torch.zeros(3, 4), torch.zeros(2, 6)))
    with pytest.raises(InputError, match="T > 0"):
        ULD(T=0)
