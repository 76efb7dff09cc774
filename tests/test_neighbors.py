"""Blockwise distances and neighbour lists: bit-identical to the dense matrix on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.retrieval.distance import squared_euclidean
from reid.retrieval.neighbors import distance_blocks, knn, reciprocal_mask, square_blocks, symmetric_distance_blocks
from reid.synthetic.features import clustered_features


def _features(seed: int = 0, count: int = 700, dim: int = 48) -> torch.Tensor:
    return torch.from_numpy(clustered_features(count // 10, count - count // 10, dim, num_ids=40, noise=2.0, seed=seed)[1])


@pytest.mark.parametrize("block_size", [None, 64, 100])
def test_blocks_are_bit_identical_to_the_dense_matrix(block_size):
    z = _features()
    dense = squared_euclidean(z, z)
    rows = torch.cat([dist for _, dist in distance_blocks(z, z, block_size)])
    assert torch.equal(rows, dense)
    covered = torch.full_like(dense, float("nan"))
    for r0, c0, dist in symmetric_distance_blocks(z, block_size):
        covered[r0:r0 + dist.shape[0], c0:c0 + dist.shape[1]] = dist
    assert torch.equal(covered, dense)  # every entry once, the mirrored half included


def test_square_blocks_are_never_thin():
    assert square_blocks(10, 64) == [(0, 10)]
    assert square_blocks(700, 100) == [(0, 100), (100, 200), (200, 300), (300, 400), (400, 500), (500, 600), (600, 700)]
    assert square_blocks(1000, 300)[-1] == (900, 1000)  # a 100-row remainder stays a block
    assert square_blocks(1010, 200)[-1] == (800, 1010)  # a 10-row one joins the previous block


@pytest.mark.parametrize("duplicates", [False, True])
def test_knn_equals_topk_of_the_full_rows(duplicates):
    z = _features(1)
    if duplicates:  # exact ties: these rows are redone on their full row
        z = torch.cat([z, z[::7]])
    dense = squared_euclidean(z, z)
    expected_values, expected_indices = torch.topk(dense, 21, dim=1, largest=False)
    indices, values = knn(z, 21, block_size=128)
    np.testing.assert_array_equal(values, expected_values.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


def test_reciprocal_mask_hand_case():
    lists = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 1], [3, 2, -1]])
    # 0 lists 1 (1 lists 0: yes) and 2 (2 does not list 0); 3 lists 2 (2 lists 3: yes)
    expected = np.array([[True, True, False], [True, True, False], [True, True, False], [True, True, False]])
    np.testing.assert_array_equal(reciprocal_mask(lists), expected)
