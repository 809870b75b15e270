"""Independent float64 references for the CKA tests: centred Gram matrices and both HSIC estimators, written out
from their definitions (Gretton et al. 2005; Song et al. 2012, eq. 5) with dense n × n matrices."""

from __future__ import annotations

import numpy as np


def ref_gram(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(0)
    return x @ x.T


def ref_hsic_biased(k, m):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ m @ h) / (n - 1) ** 2


def ref_hsic_unbiased(k, m):
    """Song et al. (2012), eq. 5, written out term by term."""
    n = len(k)
    kt, lt = k.copy(), m.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    term = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ kt @ lt @ one)
    return term / (n * (n - 3))
