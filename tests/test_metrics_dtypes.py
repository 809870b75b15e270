"""Every public metric takes numpy arrays and torch tensors of any floating dtype (float16, float32, float64), as
documented, and gives the same answer (to the input's precision) as for float64 numpy input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.metrics import attention as am
from kdviz.metrics import attribution_agreement as aa
from kdviz.metrics import calibration, classwise, relations
from kdviz.metrics import features as fm
from kdviz.metrics import logits as lm


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float64 inputs for every metric below, at small shapes; values are exact in float16 (multiples of 1/8)."""
    q = lambda a: np.round(a * 8) / 8  # noqa: E731
    return {
        "z_t": q(rng.normal(size=(12, 5)) * 2), "z_s": q(rng.normal(size=(12, 5)) * 2),
        "y": rng.integers(0, 5, size=12),
        "a_t": softmax(q(rng.normal(size=(2, 3, 4, 4)))), "a_s": softmax(q(rng.normal(size=(2, 2, 4, 4)))),
        "conv": q(rng.normal(size=(2, 3, 4, 4))), "q_s": q(np.abs(rng.normal(size=(2, 4, 4)))),
        "x": q(rng.normal(size=(16, 6))), "x2": q(rng.normal(size=(16, 4))),
        "m_t": q(rng.normal(size=(6, 10))), "m_s": q(rng.normal(size=(6, 10))),
    }


# name -> (function of the inputs dict, relative tolerance at float16)
METRICS = {
    "logits.kl": lambda d: lm.kl(d["z_t"], d["z_s"], T=2.0),
    "logits.reverse_kl": lambda d: lm.reverse_kl(d["z_t"], d["z_s"]),
    "logits.js": lambda d: lm.js(d["z_t"], d["z_s"]),
    "logits.tv": lambda d: lm.tv(d["z_t"], d["z_s"]),
    "logits.hellinger": lambda d: lm.hellinger(d["z_t"], d["z_s"]),
    "logits.entropy": lambda d: lm.entropy(d["z_t"]),
    "logits.dkd_parts": lambda d: lm.dkd_parts(d["z_t"], d["z_s"], d["y"], T=4.0)["kl"],
    "logits.topk_agreement": lambda d: lm.topk_agreement(d["z_t"], d["z_s"], k=2)["top1"],
    "logits.probabilities": lambda d: lm.probabilities(d["z_t"]),
    "calibration.ece": lambda d: calibration.ece(d["z_s"], d["y"])["ece"],
    "classwise.agreement_matrix": lambda d: classwise.agreement_matrix(d["z_t"], d["z_s"]),
    "attention.head_divergence": lambda d: am.head_divergence(d["a_t"], d["a_s"]),
    "attention.attention_entropy": lambda d: am.attention_entropy(d["a_t"]),
    "attention.rollout": lambda d: am.rollout([d["a_t"], d["a_t"]]),
    "attention.spatial_attention": lambda d: am.spatial_attention(d["conv"]),
    "attention.at_distance": lambda d: am.at_distance(am.spatial_attention(d["conv"]), d["q_s"]),
    "features.cka": lambda d: fm.cka(d["x"], d["x2"]),
    "relations.procrustes_distance": lambda d: relations.procrustes_distance(d["x"], d["x2"]),
    "relations.mutual_knn": lambda d: relations.mutual_knn(d["x"], d["x2"], k=3),
    "relations.rkd_distance": lambda d: relations.rkd_distance(d["x"], d["x2"]),
    "attribution_agreement.spearman": lambda d: aa.spearman(d["m_t"], d["m_s"]),
    "attribution_agreement.cosine": lambda d: aa.cosine(d["m_t"], d["m_s"]),
}
FLOATS = {"float16": (np.float16, torch.float16), "float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}
TOLERANCE = {"float16": 2e-2, "float32": 1e-4, "float64": 1e-9}


def as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def cast(data: dict[str, np.ndarray], kind: str, dtype: str) -> dict:
    np_dtype, torch_dtype = FLOATS[dtype]
    out = {}
    for key, value in data.items():
        if key == "y":  # labels stay integers
            out[key] = value if kind == "numpy" else torch.as_tensor(value)
        else:
            out[key] = value.astype(np_dtype) if kind == "numpy" else torch.as_tensor(value).to(torch_dtype)
    return out


@pytest.mark.parametrize("name", sorted(METRICS))
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), kind=st.sampled_from(["numpy", "torch"]), dtype=st.sampled_from(sorted(FLOATS)))
def test_every_metric_takes_numpy_and_torch_of_any_float_dtype(name, seed, kind, dtype):
    data = inputs(np.random.default_rng(seed))
    reference = as_numpy(METRICS[name](data))
    got = as_numpy(METRICS[name](cast(data, kind, dtype)))
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype], err_msg=f"{name} {kind} {dtype}")
