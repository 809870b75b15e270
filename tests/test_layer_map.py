"""Layer maps between teacher and student layers."""

from __future__ import annotations

import pytest

from kdviz.errors import InputError
from kdviz.layer_map import resolve_layer_map


def pairs(spec, n_t, n_s):
    return [(p["student"], p["teacher"]) for p in resolve_layer_map(spec, n_t, n_s)]


@pytest.mark.parametrize(("n_t", "n_s"), [(4, 2), (12, 6), (12, 4), (6, 3), (8, 8)])
def test_uniform_is_tinybert_when_depths_divide(n_t, n_s):
    k = n_t // n_s
    assert pairs("uniform", n_t, n_s) == [(i, i * k + k - 1) for i in range(n_s)]


def test_uniform_for_uneven_depths_keeps_order_and_meets_at_the_top():
    result = pairs("uniform", 5, 3)
    assert result[-1] == (2, 4)
    teachers = [t for _, t in result]
    assert teachers == sorted(teachers) and len(set(teachers)) == 3


def test_last_and_explicit_maps():
    assert pairs("last", 12, 6) == [(5, 11)]
    assert pairs({1: 3, 0: 0}, 4, 2) == [(0, 0), (1, 3)]
    assert pairs("uniform", 0, 2) == []


def test_bad_maps_name_the_problem():
    with pytest.raises(InputError, match="out of range"):
        resolve_layer_map({2: 0}, 4, 2)
    with pytest.raises(InputError, match="'uniform', 'last' or a dict"):
        resolve_layer_map("middle", 4, 2)
