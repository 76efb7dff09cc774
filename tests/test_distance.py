"""reid.retrieval.distance: the published squared-Euclidean convention, blockwise and on torch."""

from __future__ import annotations

import numpy as np
import torch

from reid.retrieval.distance import cosine_distance, squared_euclidean


def test_matches_reference_bit_for_bit(reference_dir):
    case = np.load(reference_dir / "test_seed0.npz")
    q, g = case["query_feats"], case["gallery_feats"]
    assert np.array_equal(squared_euclidean(q, g), case["dist_raw"])
    assert np.array_equal(squared_euclidean(q, q), case["dist_qq"])
    assert np.array_equal(squared_euclidean(g, g), case["dist_gg"])


def test_hand_case_blocks_and_torch():
    x = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    y = np.array([[1, 0], [-1, 0]], dtype=np.float32)
    expected = np.array([[0, 4], [2, 2], [0.8, 3.2]], dtype=np.float32)
    np.testing.assert_allclose(squared_euclidean(x, y), expected, atol=1e-6)
    np.testing.assert_allclose(squared_euclidean(x, y, block_size=2), expected, atol=1e-6)
    out = squared_euclidean(torch.from_numpy(x), torch.from_numpy(y))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(cosine_distance(x, y), expected / 2, atol=1e-6)
