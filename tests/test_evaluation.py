"""Held-out scores from features: raw distances and both re-rankings, against the reference figures and the plain
implementations of tests/plain_postprocess.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from plain_postprocess import plain_classic, plain_hard_weight, plain_scores

from reid.config import RerankSettings
from reid.scoring import complete_scores, distance_matrices, evaluate_features, format_scores
from tests.reference_cases import distance_d


def clustered(seed: int = 0, players: int = 12, gallery_per_player: int = 8, noise: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(players, 16))
    ids = np.arange(players) * 3 + 1
    def draw(count: int) -> np.ndarray:
        feats = np.repeat(centres, count, axis=0) + noise * rng.normal(size=(players * count, 16))
        return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    return draw(1), draw(gallery_per_player), ids, np.repeat(ids, gallery_per_player)


def test_scores_equal_the_published_figures_of_the_reference_case(reference_dir):
    case = np.load(reference_dir / "test_seed0.npz")
    scores = complete_scores(evaluate_features(case["query_feats"], case["gallery_feats"], case["query_ids"],
                                               case["gallery_ids"], settings=RerankSettings(k1=20, k2=6, lambda_value=0.7)).scores)
    for name, reference in (("raw", "raw"), ("classic", "rerank_l07"), ("hard", "hardweight")):
        assert scores[f"map_{name}"] == pytest.approx(case[f"mAP_{reference}"], abs=1e-6), name
        top = case[f"cmc_top_1_5_10_market1501_{reference}"]  # rank-k: the first true match (market1501)
        assert [scores[f"rank{k}_{name}"] for k in (1, 5, 10)] == pytest.approx(top.tolist(), abs=1e-9), name


def test_scores_equal_the_plain_implementations_on_each_distance():
    query, gallery, query_ids, gallery_ids = clustered()
    scores = complete_scores(evaluate_features(query, gallery, query_ids, gallery_ids,
                                               settings=RerankSettings(k1=6, k2=3, lambda_value=0.5)).scores)
    raw = distance_d(query, gallery)
    classic = plain_classic(raw, distance_d(query, query), distance_d(gallery, gallery), k1=6, k2=3, lambda_value=0.5)
    hard = plain_hard_weight(query, gallery, k1=6, k2=3, lambda_value=0.5)
    cams = np.zeros(len(query_ids), np.int64), np.ones(len(gallery_ids), np.int64)
    for name, dist in (("raw", raw), ("classic", classic), ("hard", hard)):
        expected_map, expected_inp, curves = plain_scores(dist, query_ids, gallery_ids, *cams, topk=10)
        assert scores[f"map_{name}"] == pytest.approx(expected_map, abs=1e-9), name
        assert scores[f"minp_{name}"] == pytest.approx(expected_inp, abs=1e-9), name
        assert [scores[f"rank{k}_{name}"] for k in (1, 5, 10)] == pytest.approx(curves["market1501"][[0, 4, 9]].tolist()), name
    assert 0 < scores["map_raw"] < scores["map_hard"] < 1
    assert list(scores)[:3] == ["map_raw", "map_classic", "map_hard"]


def test_well_separated_players_score_perfectly_and_raw_only_skips_re_ranking():
    query, gallery, query_ids, gallery_ids = clustered(noise=0.05)
    scores = complete_scores(evaluate_features(query, gallery, query_ids, gallery_ids, ("raw",)).scores)
    assert scores["map_raw"] == pytest.approx(1.0) and scores["rank1_raw"] == 1.0 and scores["minp_raw"] == pytest.approx(1.0)
    assert math.isnan(scores["map_classic"]) and math.isnan(scores["rank1_hard"])
    table = format_scores(scores)
    assert "raw" in table and "100.00" in table and "classic" not in table


def test_a_split_smaller_than_the_neighbour_lists_shrinks_k1_with_a_note():
    # 2 queries, 4 gallery images: the classic lists hold k1 + 1 of the 6 images (k1 <= 5), the hard-weight
    # lists k1 of the 4 gallery images (k1 <= 4); k2 <= k1. The result is the plain version at those settings.
    query, gallery, query_ids, gallery_ids = clustered(seed=3, players=2, gallery_per_player=2)
    notes = []
    matrices = distance_matrices(query, gallery, note=notes.append)
    assert notes == ["classic re-ranking with k1=5, k2=5 instead of k1=20, k2=6: only 2 queries and 4 gallery images",
                     "hard_weight re-ranking with k1=4, k2=4 instead of k1=20, k2=6: only 2 queries and 4 gallery images"]
    raw = distance_d(query, gallery)
    np.testing.assert_allclose(matrices["classic"], plain_classic(raw, distance_d(query, query), distance_d(gallery, gallery),
                                                                  k1=5, k2=5, lambda_value=0.7), atol=1e-5)
    np.testing.assert_allclose(matrices["hard"], plain_hard_weight(query, gallery, k1=4, k2=4, lambda_value=0.7), atol=1e-5)
    fitted, note = RerankSettings(k1=3, k2=2).fitted(2, 4, "classic")
    assert fitted == RerankSettings(k1=3, k2=2) and note is None  # large enough: unchanged, no note
