"""Blockwise metrics: the numbers of ``reid.retrieval.metrics.evaluate`` without the (m, n) matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.retrieval.blockwise_metrics import evaluate_blocks, evaluate_features, evaluate_topk
from reid.retrieval.distance import squared_euclidean
from reid.retrieval.metrics import evaluate
from reid.retrieval.rerank import classic_blocks, classic_from_features
from reid.synthetic.features import clustered_features


def _case(seed: int = 0):
    q, g, q_ids, g_ids = clustered_features(60, 700, 32, num_ids=40, noise=2.2, seed=seed)
    rng = np.random.default_rng(seed)
    q_cams, g_cams = rng.integers(0, 3, len(q)), rng.integers(0, 3, len(g))  # some same-camera exclusions
    return q, g, q_ids, g_ids, q_cams, g_cams


def _assert_same_scores(got, expected, configs=("allshots", "cuhk03", "market1501"), depth=100):
    assert got.mAP == pytest.approx(expected.mAP, abs=1e-12)
    assert got.mINP == pytest.approx(expected.mINP, abs=1e-12)
    for name in configs:
        np.testing.assert_allclose(got.cmc[name][:depth], expected.cmc[name][:depth], rtol=0, atol=1e-12)


def test_reference_case_from_features(reference_dir):
    case = np.load(reference_dir / "test_seed0.npz")
    np.random.seed(12345)  # the reference seeded before each CMC call; only cuhk03 draws
    scores = evaluate_features(case["query_feats"], case["gallery_feats"], case["query_ids"], case["gallery_ids"],
                               case["query_cams"], case["gallery_cams"], block_size=16)
    assert scores.mAP == pytest.approx(float(case["mAP_raw"]), abs=1e-6)
    for name in ("allshots", "cuhk03", "market1501"):
        np.testing.assert_allclose(scores.cmc[name], case[f"cmc_{name}_raw"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("block_size", [None, 16, 25])
def test_features_equal_the_dense_evaluation(block_size):
    q, g, q_ids, g_ids, q_cams, g_cams = _case(1)
    expected = evaluate(squared_euclidean(q, g), q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(3))
    got = evaluate_features(q, g, q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(3), block_size=block_size)
    _assert_same_scores(got, expected)


def test_reranked_blocks_equal_the_full_matrix():
    q, g, q_ids, g_ids, q_cams, g_cams = _case(2)
    expected = evaluate(classic_from_features(q, g), q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(0))
    got = evaluate_blocks(classic_blocks(q, g, block_size=16), q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(0))
    _assert_same_scores(got, expected)


def test_tied_distances_in_torch_blocks_rank_as_numpy_does():
    q, g, q_ids, g_ids, q_cams, g_cams = _case(5)
    dist = np.round(squared_euclidean(q, g), 2)  # many exact ties: cuhk03's draws depend on their order
    expected = evaluate(dist, q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(1))
    blocks = ((start, torch.from_numpy(dist[start:start + 16])) for start in range(0, len(q), 16))
    got = evaluate_blocks(blocks, q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(1))
    _assert_same_scores(got, expected)


def test_blocks_must_cover_the_queries_in_order():
    q, g, q_ids, g_ids, _, _ = _case(3)
    dist = squared_euclidean(q, g)
    with pytest.raises(ValueError, match="consecutive"):
        evaluate_blocks([(0, dist[:10]), (20, dist[20:])], q_ids, g_ids)
    with pytest.raises(ValueError, match="cover"):
        evaluate_blocks([(0, dist[:10])], q_ids, g_ids)


def test_topk_form_exact_when_every_match_is_in_the_lists():
    q, g, q_ids, g_ids, q_cams, g_cams = _case(4)
    full = classic_from_features(q, g)
    expected = evaluate(full, q_ids, g_ids, q_cams, g_cams)
    order = np.argsort(full, axis=1, kind="stable")
    last_match = max(np.nonzero((g_ids[order[i]] == q_ids[i]) & (g_cams[order[i]] != q_cams[i]))[0].max() for i in range(len(q)))
    deep = last_match + 1
    scores = evaluate_topk(order[:, :deep], np.take_along_axis(full, order[:, :deep], axis=1), q_ids, g_ids, q_cams, g_cams)
    assert scores.exact and scores.evaluated_queries == len(q) and scores.cmc_exact_ranks == min(100, deep)
    _assert_same_scores(scores, expected, configs=("allshots", "market1501"), depth=min(100, deep))

    shallow = 8  # most queries now miss some matches: AP is a lower bound; market1501 is exact as far as
    # every list without a match holds valid items (excluded same-camera matches use up list places)
    scores = evaluate_topk(order[:, :shallow], np.take_along_axis(full, order[:, :shallow], axis=1), q_ids, g_ids, q_cams, g_cams)
    assert not scores.exact and scores.complete_queries < scores.evaluated_queries == len(q)
    assert scores.mAP < expected.mAP
    assert 1 <= scores.cmc_exact_ranks < shallow
    exact = scores.cmc_exact_ranks
    np.testing.assert_allclose(scores.cmc["market1501"][:exact], expected.cmc["market1501"][:exact], rtol=0, atol=1e-12)
