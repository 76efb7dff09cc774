"""reid.rerank: the reference cases, a plain dense implementation of the README's R1 / R2, torch inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.distance import squared_euclidean
from reid.rerank import classic, hard_weight
from tests.plain_postprocess import plain_classic, plain_hard_weight

TOLERANCE = 1e-5  # reference README: float32 distance matrices


def _clustered(seed, players=12, per_player=14, dim=8, sigma=0.35, duplicates=True):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(players, dim))
    q = centres + sigma * rng.normal(size=(players, dim))
    gallery_ids = np.repeat(np.arange(players), per_player)
    g = centres[gallery_ids] + sigma * rng.normal(size=(len(gallery_ids), dim))
    if duplicates:  # identical images give exact ties in every distance
        g[5] = g[4]
        g[40] = g[41] = g[42]
        q[3] = g[50]
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    return q, g


@pytest.mark.parametrize("seed, k1, k2, lambda_value", [(0, 20, 6, 0.3), (1, 10, 4, 0.7), (2, 7, 1, 0.5), (3, 21, 6, 0.3)])
def test_classic_equals_plain_dense_version(seed, k1, k2, lambda_value):
    q, g = _clustered(seed)
    qg, qq, gg = squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g)
    expected = plain_classic(qg, qq, gg, k1, k2, lambda_value)
    got = classic(qg, qq, gg, k1=k1, k2=k2, lambda_value=lambda_value)
    assert got.dtype == np.float32 and got.shape == qg.shape
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("seed, k1, k2, threshold", [(0, 20, 6, 2 / 3), (1, 10, 4, 2 / 3), (2, 8, 3, 0.5), (3, 20, 6, 0.9)])
def test_hard_weight_equals_plain_dense_version(seed, k1, k2, threshold):
    q, g = _clustered(seed, sigma=0.5)
    expected = plain_hard_weight(q, g, k1, k2, 0.7, threshold)
    got = hard_weight(q, g, k1=k1, k2=k2, lambda_value=0.7, expansion_threshold=threshold)
    assert got.dtype == np.float32 and got.shape == (len(q), len(g))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) <= 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_cases(reference_dir, seed):
    case = np.load(reference_dir / f"test_seed{seed}.npz")
    for lambda_value, key in ((0.7, "dist_rerank_l07"), (0.3, "dist_rerank_l03")):
        got = classic(case["dist_raw"], case["dist_qq"], case["dist_gg"], k1=20, k2=6, lambda_value=lambda_value)
        assert np.abs(got - case[key]).max() <= TOLERANCE, key
    got = hard_weight(case["query_feats"], case["gallery_feats"], k1=20, k2=6, lambda_value=0.7, expansion_threshold=2 / 3)
    assert np.abs(got - case["dist_hardweight"]).max() <= TOLERANCE


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_torch_inputs_compute_on_their_device(reference_dir, device):
    case = np.load(reference_dir / "test_seed0.npz")
    tensors = [torch.from_numpy(case[k]).to(device) for k in ("dist_raw", "dist_qq", "dist_gg")]
    got = classic(*tensors, k1=20, k2=6, lambda_value=0.7)
    assert isinstance(got, torch.Tensor) and got.device.type == device and got.dtype == torch.float32
    assert np.abs(got.cpu().numpy() - case["dist_rerank_l07"]).max() <= TOLERANCE
    feats = [torch.from_numpy(case[k]).to(device) for k in ("query_feats", "gallery_feats")]
    got = hard_weight(*feats)
    assert isinstance(got, torch.Tensor) and got.device.type == device
    assert np.abs(got.cpu().numpy() - case["dist_hardweight"]).max() <= TOLERANCE
