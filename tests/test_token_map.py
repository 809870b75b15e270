"""The token map: regions by teacher entropy and divergence (against a direct count written here, plus hypothesis
properties), the reader's real tokens of a run, and the figure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz.errors import InputError
from kdviz.metrics.token_regions import REGIONS, real_tokens, token_regions


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), split=st.booleans())
def test_regions_match_a_direct_count_and_their_shares_add_up(seed, n, split):
    rng = np.random.default_rng(seed)
    h, d = rng.gamma(1.5, size=n), rng.exponential(size=n) * rng.integers(0, 2, size=n)  # some zero divergences
    h_split, d_split = (0.8, 0.3) if split else (np.median(h), np.median(d))
    regions = token_regions(h, d, **({"entropy_split": 0.8, "divergence_split": 0.3} if split else {}))
    assert (regions.entropy_split, regions.divergence_split) == pytest.approx((h_split, d_split))
    for (confident, disagreeing), name in REGIONS.items():
        inside = ((h < h_split) == confident) & ((d > d_split) == disagreeing)
        assert regions.token_share[name] == pytest.approx(inside.mean())
        expected = d[inside].sum() / d.sum() if d.sum() > 0 else 0.0
        assert regions.divergence_share[name] == pytest.approx(expected)
        np.testing.assert_array_equal(regions.region == regions.names.index(name), inside)
    assert sum(regions.token_share.values()) == pytest.approx(1.0)
    if d.sum() > 0:
        assert sum(regions.divergence_share.values()) == pytest.approx(1.0)


def test_real_tokens_leave_out_padding_and_positions_without_a_divergence():
    values = np.array([[0.1, np.nan, 0.3], [0.4, 0.5, 0.6]])
    mask = np.array([[1, 1, 1], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(real_tokens(values, mask), [0.1, 0.3, 0.4])
    with pytest.raises(InputError, match="no tokens"):
        token_regions([], [])
    with pytest.raises(InputError, match="finite"):
        token_regions([0.1, np.nan], [0.2, 0.3])


def test_the_token_map_of_the_demo_language_model_run(demo_runs):
    from kdviz.readers.logits import LogitData
    from kdviz.views.token_map import token_map

    data = LogitData.from_run(demo_runs["charlm"])
    points = data.token_points("kl")
    kl = np.asarray(data.token_stats["kl"], dtype=float)
    mask = data.token_stats["mask"]
    expected = np.isfinite(kl) & (mask if mask is not None else True)
    assert len(points["divergence"]) == int(expected.sum())
    np.testing.assert_array_equal(points["divergence"], kl[expected])
    np.testing.assert_array_equal(kl[points["sample"], points["position"]], points["divergence"])
    assert ((points["shared_mass"] >= 0) & (points["shared_mass"] <= 1 + 1e-6)).all()
    regions = token_regions(points["entropy"], points["divergence"])
    fig = token_map(points["entropy"], points["divergence"], regions, colour=points["shared_mass"],
                    where=(points["sample"], points["position"]), max_points=1000)
    assert len(fig.data[0].x) == 1000 and "1,000 of" in fig.layout.title.text
    labels = [a.text for a in fig.layout.annotations if a.text and a.text.startswith("<b>")]
    assert len(labels) == 4
    for name in REGIONS.values():
        share = f"{regions.token_share[name]:.0%} of tokens"
        assert any(name in label and share in label for label in labels)
    with pytest.raises(Exception, match="language-model run"):
        LogitData.from_run(demo_runs["digits-cnn"]).token_points()
