"""reid.rerank: the reference cases, a plain dense implementation of the README's R1 / R2, torch inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.distance import squared_euclidean
from reid.rerank import classic, hard_weight

TOLERANCE = 1e-5  # reference README: float32 distance matrices


# ---------------------------------------------------------------- plain dense versions, written from the README

def _plain_classic(qg, qq, gg, k1, k2, lambda_value):
    m = qg.shape[0]
    total = qg.shape[0] + qg.shape[1]
    squared = np.block([[qq, qg], [qg.T, gg]]).astype(np.float32) ** 2
    o = (squared / squared.max(axis=0)).T
    rank = np.argsort(o, axis=1)
    half = int(np.around(k1 / 2)) + 1
    v = np.zeros((total, total), np.float32)
    for i in range(total):
        r = [f for f in rank[i, :k1 + 1] if i in rank[f, :k1 + 1]]
        expansion = list(r)
        for c in r:
            rc = [e for e in rank[c, :half] if c in rank[e, :half]]
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expansion += rc
        e = np.unique(expansion)
        w = np.exp(-o[i, e])
        v[i, e] = w / np.sum(w)
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(total)])
    s = np.stack([np.minimum(v[i], v).sum(axis=1) for i in range(m)])
    jaccard = 1 - s / (2 - s)
    return (jaccard * lambda_value + o[:m] * (1 - lambda_value))[:, m:].astype(np.float32)


def _plain_hard_weight(q, g, k1, k2, lambda_value, threshold):
    q, g = torch.from_numpy(q), torch.from_numpy(g)
    m, n = len(q), len(g)
    z = torch.cat([q, g])
    d_all = squared_euclidean(z, z)
    tq = torch.topk(d_all[:m], k1, dim=1, largest=False).indices.tolist()
    tg_all = torch.topk(d_all[m:], k1, dim=1, largest=False).indices.tolist()
    tgg = torch.topk(d_all[m:, m:], k1, dim=1, largest=False).indices.tolist()
    thalf = [row[:k1 // 2] for row in tgg]
    h = [[x for x in thalf[a] if a in thalf[x]] for a in range(n)]
    q_vec, g_vec = torch.zeros(m, n), torch.zeros(n, n)
    for p in range(m):
        r = [t - m for t in tq[p] if t >= m and p in tg_all[t - m]]
        p0, walk, merged, extended = set(r), list(r), set(r), False
        i = 0
        while i < len(walk):  # the published loop walks a list that its first merge extends
            cand = walk[i]
            if len(p0 & set(h[cand])) >= threshold * len(h[cand]):
                merged |= set(h[cand])
                if not extended:
                    walk += h[cand]
                    extended = True
            i += 1
        q_vec[p, sorted(merged)] = 1
    for a in range(n):
        r = [x for x in tgg[a] if a in tgg[x]]
        others, merged = r[1:], set(r)
        for x in others:
            if len(set(others) & set(h[x])) >= threshold * len(h[x]):
                merged |= set(h[x])
        g_vec[a, sorted(merged)] = 1
    for p in range(m):  # in place: earlier queries are already expanded
        total = torch.zeros(n)
        for j in tq[p][:k2]:
            total += q_vec[j] if j < m else g_vec[j - m]
        q_vec[p] = total / len(tq[p][:k2])
    for a in range(n):
        total = torch.zeros(n)
        for x in tgg[a][1:k2 + 1]:
            total += g_vec[x]
        g_vec[a] = total / len(tgg[a][1:k2 + 1])
    inter = torch.minimum(q_vec[:, None, :], g_vec[None, :, :]).sum(2)
    union = torch.maximum(q_vec[:, None, :], g_vec[None, :, :]).sum(2)
    jaccard = 1 - inter / union
    return ((1 - lambda_value) * F.normalize(squared_euclidean(q, g), p=2, dim=1) + lambda_value * jaccard).numpy()


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
    expected = _plain_classic(qg, qq, gg, k1, k2, lambda_value)
    got = classic(qg, qq, gg, k1=k1, k2=k2, lambda_value=lambda_value)
    assert got.dtype == np.float32 and got.shape == qg.shape
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("seed, k1, k2, threshold", [(0, 20, 6, 2 / 3), (1, 10, 4, 2 / 3), (2, 8, 3, 0.5), (3, 20, 6, 0.9)])
def test_hard_weight_equals_plain_dense_version(seed, k1, k2, threshold):
    q, g = _clustered(seed, sigma=0.5)
    expected = _plain_hard_weight(q, g, k1, k2, 0.7, threshold)
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
