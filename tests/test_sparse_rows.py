"""Sparse rows: the in-place sequential means of the hard-weight re-ranking, and the sums of minima."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from reid.retrieval.sparse_rows import TorchCsr, sequential_row_means, sum_of_minima


def test_sequential_row_means_equals_the_loop():
    rng = np.random.default_rng(0)
    r, extra_rows, cols, k = 40, 15, 30, 4
    rows = sp.random(r, cols, density=0.2, random_state=1, dtype=np.float32, format="csr")
    extra = sp.random(extra_rows, cols, density=0.2, random_state=2, dtype=np.float32, format="csr")
    neighbours = np.stack([rng.choice(r + extra_rows, k, replace=False) for _ in range(r)])
    current, fixed_extra = rows.toarray(), extra.toarray()
    for i in range(r):  # the published in-place loop
        current[i] = sum(current[j] if j < r else fixed_extra[j - r] for j in neighbours[i]) / k
    out = sequential_row_means(rows, neighbours, extra=extra)
    np.testing.assert_allclose(out.toarray(), current, rtol=1e-6, atol=1e-7)


def test_sum_of_minima_equals_the_dense_sum():
    left = sp.random(30, 50, density=0.2, random_state=3, dtype=np.float32, format="csr")
    right = sp.random(40, 50, density=0.3, random_state=4, dtype=np.float32, format="csr")
    expected = np.minimum(left.toarray()[:, None, :], right.toarray()[None, :, :]).sum(axis=2)
    got = sum_of_minima(TorchCsr.from_scipy(left, "cpu"), 5, 25, TorchCsr.from_scipy(right.T.tocsr(), "cpu"))
    np.testing.assert_allclose(got.numpy(), expected[5:25], rtol=1e-6, atol=1e-6)
