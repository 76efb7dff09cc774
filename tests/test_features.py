"""The features file, pair-distance statistics and the analysis pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reid.feature_stats import pair_distances
from reid.features import FeatureFileError, FeatureSet
from reid.plots import plot_distance_histograms, plot_feature_map, tsne_points
from reid.retrieval.distance import squared_euclidean


def clustered_features(players: int = 6, per_player: int = 8, dim: int = 16, spread: float = 0.35, seed: int = 0) -> FeatureSet:
    """L2-normalised features around one random centre per player; first image of each player is its query."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(players, dim))
    ids = np.repeat(np.arange(100, 100 + players), per_player)
    features = centres[ids - 100] + spread * rng.normal(size=(len(ids), dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    frames = np.tile(np.arange(per_player), players)
    img_type = np.where(frames == 0, "q", "g")
    order = np.argsort(img_type == "g", kind="stable")  # queries first, as predict.py writes them
    img_id = np.array([f"{p}_0_{f:02d}" for p, f in zip(ids, frames)])
    folder = np.where(img_type == "q", "reid_test/query", "reid_test/gallery")
    return FeatureSet(features[order], img_id[order], ids[order], img_type[order], folder[order], "test", "x.pth", False)


def exact_pairs(features: np.ndarray, players: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = squared_euclidean(features, features).astype(np.float64)
    i, j = np.triu_indices(len(features), k=1)
    same = players[i] == players[j]
    return dist[i, j][same], dist[i, j][~same]


def test_feature_file_round_trip(tmp_path):
    features = clustered_features()
    path = features.save(tmp_path / "sub" / "features_test.npz")
    assert path.name == "features_test.npz" and sorted(p.name for p in path.parent.iterdir()) == ["features_test.npz"]
    loaded = FeatureSet.load(path)
    assert loaded.features.dtype == np.float32 and np.array_equal(loaded.features, features.features)
    for name in ("img_id", "player", "img_type", "folder"):
        assert np.array_equal(getattr(loaded, name), getattr(features, name)), name
    assert (loaded.split, loaded.checkpoint, loaded.flip) == ("test", "x.pth", False)
    assert len(loaded.query) == 6 and set(loaded.gallery.img_type) == {"g"}
    # plain arrays: numpy reads the file without pickle
    with np.load(path, allow_pickle=False) as data:
        assert data["player"].dtype == np.int64 and str(data["split"]) == "test"


def test_feature_file_errors_name_the_file(tmp_path):
    features = clustered_features()
    partial = tmp_path / "partial.npz"
    np.savez(partial, features=features.features, img_id=features.img_id)
    with pytest.raises(FeatureFileError, match=r"partial\.npz.*missing key\(s\) player"):
        FeatureSet.load(partial)
    broken = tmp_path / "broken.npz"
    broken.write_text("not a zip")
    with pytest.raises(FeatureFileError, match="broken.npz"):
        FeatureSet.load(broken)
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        FeatureSet.load(tmp_path / "nothere.npz")
    with pytest.raises(ValueError, match="one entry per feature row"):
        FeatureSet(features.features, features.img_id[:-1], features.player, features.img_type, features.folder, "test")
    with pytest.raises(ValueError, match="'q' or 'g'"):
        FeatureSet(features.features, features.img_id, features.player, np.full(len(features), "x"), features.folder, "test")


def test_pair_distances_against_every_pair():
    features = clustered_features(players=7, per_player=9)
    intra, inter = exact_pairs(features.features, features.player)
    stats = pair_distances(features.features, features.player, bins=4000, block_size=5)  # several blocks
    width = 4.0 / 4000
    assert stats.total == {"intra": 7 * 36, "inter": len(inter)} and len(intra) == 7 * 36
    for kind, values in (("intra", intra), ("inter", inter)):
        assert stats.mean(kind) == pytest.approx(values.mean(), abs=1e-9)
        assert stats.std(kind) == pytest.approx(values.std(), abs=1e-6)
        assert stats.min[kind] == pytest.approx(values.min()) and stats.max[kind] == pytest.approx(values.max())
        for q in (0.05, 0.5, 0.95):
            # a q-quantile to one bin: at most a fraction q of the values lies below it, at least q up to it
            value = stats.quantile(kind, q)
            assert (values < value - width).mean() <= q <= (values <= value + width).mean(), (kind, q)
    exact_auc = ((intra[:, None] < inter[None, :]).mean() + 0.5 * (intra[:, None] == inter[None, :]).mean())
    assert stats.auc() == pytest.approx(exact_auc, abs=5e-3)
    assert stats.auc() > 0.9  # well separated clusters
    one_block = pair_distances(features.features, features.player, bins=4000)
    assert all(np.array_equal(one_block.counts[k], stats.counts[k]) for k in ("intra", "inter"))
    table = stats.table()
    assert table["pairs"].tolist() == ["intra", "inter"] and table["mean"].iloc[0] < table["mean"].iloc[1]


def test_pair_distances_between_two_sets_and_errors():
    features = clustered_features()
    query, gallery = features.query, features.gallery
    stats = pair_distances(query.features, query.player, gallery.features, gallery.player, metric="euclidean")
    assert stats.total == {"intra": 6 * 7, "inter": 6 * 7 * 5}
    dist = np.sqrt(np.maximum(squared_euclidean(query.features, gallery.features), 0))
    same = query.player[:, None] == gallery.player[None, :]
    assert stats.mean("intra") == pytest.approx(dist[same].mean(), abs=1e-6)
    with pytest.raises(ValueError, match="no pair of images shares a player"):
        pair_distances(features.features, np.arange(len(features)))
    with pytest.raises(ValueError, match="at least two players"):
        pair_distances(features.features, np.zeros(len(features)))


def test_feature_map_and_histogram_pictures(tmp_path):
    features = clustered_features()
    points = tsne_points(features.features, perplexity=30, seed=0)  # perplexity lowered for 48 points
    assert points.shape == (48, 2) and np.isfinite(points).all()
    # t-SNE keeps the clusters: each point's nearest neighbour is mostly of its own player
    nearest = np.argsort(squared_euclidean(points, points), axis=1)[:, 1]
    assert (features.player[nearest] == features.player).mean() > 0.8
    path = plot_feature_map(points, features.player, tmp_path / "map.png", is_query=features.img_type == "q")
    stats = pair_distances(features.features, features.player)
    hist = plot_distance_histograms(stats.edges, stats.counts["intra"], stats.counts["inter"], tmp_path / "hist.png",
                                    notes=["AUC 1"])
    for picture in (path, hist):
        with Image.open(picture) as image:
            assert image.format == "PNG" and image.width > 300
