"""Held-out scores from features: raw distances and both re-rankings, through reid.metrics / reid.rerank."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reid import metrics, rerank
from reid.distance import squared_euclidean
from reid.evaluation import evaluate_features, format_scores


def clustered(seed: int = 0, players: int = 12, gallery_per_player: int = 8, noise: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(players, 16))
    ids = np.arange(players) * 3 + 1
    def draw(count: int) -> np.ndarray:
        feats = np.repeat(centres, count, axis=0) + noise * rng.normal(size=(players * count, 16))
        return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    return draw(1), draw(gallery_per_player), ids, np.repeat(ids, gallery_per_player)


def test_scores_are_those_of_the_metrics_on_each_distance():
    query, gallery, query_ids, gallery_ids = clustered()
    scores = evaluate_features(query, gallery, query_ids, gallery_ids, k1=6, k2=3, lambda_value=0.5)
    raw = squared_euclidean(query, gallery)
    classic = rerank.classic(raw, squared_euclidean(query, query), squared_euclidean(gallery, gallery), k1=6, k2=3, lambda_value=0.5)
    hard = rerank.hard_weight(query, gallery, k1=6, k2=3, lambda_value=0.5)
    for name, dist in (("raw", raw), ("classic", classic), ("hard", hard)):
        assert scores[f"map_{name}"] == pytest.approx(metrics.mean_ap(dist, query_ids, gallery_ids))
        assert scores[f"minp_{name}"] == pytest.approx(metrics.mean_inp(dist, query_ids, gallery_ids))
        curve = metrics.cmc(dist, query_ids, gallery_ids, topk=10)
        assert [scores[f"rank{k}_{name}"] for k in (1, 5, 10)] == pytest.approx([curve[0], curve[4], curve[9]])
    assert 0 < scores["map_raw"] < 1
    assert list(scores)[:3] == ["map_raw", "map_classic", "map_hard"]


def test_well_separated_players_score_perfectly_and_raw_only_skips_re_ranking():
    query, gallery, query_ids, gallery_ids = clustered(noise=0.05)
    scores = evaluate_features(query, gallery, query_ids, gallery_ids, rerank_distances=False)
    assert scores["map_raw"] == pytest.approx(1.0) and scores["rank1_raw"] == 1.0 and scores["minp_raw"] == pytest.approx(1.0)
    assert math.isnan(scores["map_classic"]) and math.isnan(scores["rank1_hard"])
    table = format_scores(scores)
    assert "raw" in table and "100.00" in table and "classic" not in table
