"""Grouping the crops of one game into identities: distances within a set, clustering, its threshold, its scores.

Every crop of the set is both a query and a gallery image. ``within_set_distances`` gives the (N, N)
distance among them: squared Euclidean (``raw``) or the k-reciprocal Jaccard distance (``jaccard``),
the classic re-ranking with lambda 1 computed over the set itself, as clustering-based re-ID uses it
(SpCL, cluster-contrast: DBSCAN on this distance). The re-ranking engine (``reid.retrieval.rerank``) takes a
query set and a disjoint gallery set and builds its neighbourhoods over their union; in the classic
variant the Jaccard distance of two images depends only on that union (the k-reciprocal sets and the
query expansion are built for every image alike) and is symmetric. So the full matrix comes from the
one engine by splitting the set into halves "bit b of the index is 0 / 1", b = 0 .. ceil(log2 N) - 1:
every pair of crops is split by some bit. (The classic variant's original-distance term is normalised
per row, not symmetric, and the hard-weight variant builds its gallery neighbourhoods within the
gallery only: neither has a single-set form, so neither is used here.)

The clustering is scikit-learn's: agglomerative (average, complete or single linkage) or DBSCAN on
the precomputed distances, with a distance threshold chosen where the truth is known
(``choose_threshold``: the best mean adjusted Rand index over games of the training split). Scores:
adjusted Rand index, NMI and pairwise precision / recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from reid.config import RerankSettings
from reid.retrieval import rerank
from reid.retrieval.arrays import ArrayLike
from reid.retrieval.distance import squared_euclidean

ClusterMethod = Literal["agglomerative", "dbscan"]
WithinDistance = Literal["jaccard", "raw"]
Linkage = Literal["average", "complete", "single"]


def within_set_distances(features: ArrayLike, distance: WithinDistance = "jaccard",
                         settings: RerankSettings = RerankSettings(), device: str | torch.device = "cpu") -> np.ndarray:
    """(N, D) L2-normalised features -> (N, N) float32 distances among them, symmetric, zero diagonal.

    ``raw``: squared Euclidean, in [0, 4]. ``jaccard``: the k-reciprocal Jaccard distance over the set
    (see the module docstring), in [0, 1], with the k1 and k2 of ``settings`` (shrunk for sets of k1
    crops or fewer, ``RerankSettings.fitted``; lambda is 1: the Jaccard term only); ceil(log2 N) calls
    of the engine on the whole set, on ``device``.
    """
    if distance not in ("jaccard", "raw"):
        raise ValueError(f"unknown within-set distance {distance!r}; expected jaccard or raw")
    features = np.asarray(features, dtype=np.float32)
    count = len(features)
    if distance == "raw" or count < 3:
        dist = np.maximum(np.asarray(squared_euclidean(features, features), dtype=np.float32), 0.0)
    else:
        jaccard, _ = settings.replaced(lambda_value=1.0).fitted(count, 0, "classic")  # lists of k1 + 1 of the N crops
        dist = np.zeros((count, count), dtype=np.float32)
        index = np.arange(count)
        for bit in range(math.ceil(math.log2(count))):
            upper = (index >> bit) & 1 == 1
            first, second = index[~upper], index[upper]
            block = rerank.rerank(features[first], features[second], "classic", jaccard, device=device)  # (|first|, |second|)
            dist[np.ix_(first, second)] = block
            dist[np.ix_(second, first)] = block.T
    dist = (dist + dist.T) / 2  # float rounding only
    np.fill_diagonal(dist, 0.0)
    return dist


def cluster(distances: np.ndarray, threshold: float, method: ClusterMethod = "agglomerative",
            linkage: Linkage = "average", min_samples: int = 2) -> np.ndarray:
    """(N, N) distances -> (N,) int64 identity labels, 0 for the largest group, 1 for the next, ...

    agglomerative: groups merge while their ``linkage`` distance is below ``threshold``. dbscan:
    ``eps`` = threshold, ``min_samples`` crops make a core; crops it leaves as noise get an identity
    each. Ties in size keep the order of first appearance.
    """
    from sklearn.cluster import DBSCAN, AgglomerativeClustering

    distances = np.asarray(distances, dtype=np.float64)
    if len(distances) < 2:
        return np.zeros(len(distances), dtype=np.int64)
    if method == "agglomerative":
        labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage=linkage,
                                         distance_threshold=threshold).fit_predict(distances)
    elif method == "dbscan":
        labels = DBSCAN(eps=threshold, min_samples=min_samples, metric="precomputed").fit_predict(distances)
        noise = labels < 0
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(noise.sum())
    else:
        raise ValueError(f"unknown clustering method {method!r}; expected agglomerative or dbscan")
    return by_size(labels)


def by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel groups 0, 1, ... by decreasing size, ties by first appearance."""
    _, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))  # group indices, largest first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)].astype(np.int64)


def cluster_scores(truth: Sequence, labels: Sequence) -> dict[str, float]:
    """Agreement of a clustering with the true identities: ``ari`` (adjusted Rand index, 0 = chance,
    1 = perfect), ``nmi`` (normalised mutual information), ``pair_precision`` (share of the crop pairs
    put together that are one player; 1 when none are), ``pair_recall`` (share of same-player pairs put
    together; 1 when there are none), ``identities`` and ``clusters`` (counts)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.metrics.cluster import pair_confusion_matrix

    truth, labels = np.asarray(truth), np.asarray(labels)
    pairs = pair_confusion_matrix(truth, labels)  # [together in truth?][together in the clustering?], ordered pairs
    together, split_wrongly, merged_wrongly = pairs[1, 1], pairs[1, 0], pairs[0, 1]
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "pair_precision": float(together / (together + merged_wrongly)) if together + merged_wrongly else 1.0,
        "pair_recall": float(together / (together + split_wrongly)) if together + split_wrongly else 1.0,
        "identities": int(len(np.unique(truth))),
        "clusters": int(len(np.unique(labels))),
    }


def threshold_candidates(games: Sequence[np.ndarray], count: int = 40) -> np.ndarray:
    """Thresholds to try: quantiles 0.2 % ... 60 % of the pooled off-diagonal distances of ``games``
    (same-player pairs are the few smallest: one in P for a game of P players)."""
    pooled = np.concatenate([d[~np.eye(len(d), dtype=bool)] for d in games if len(d) > 1])
    if pooled.size == 0:
        raise ValueError("no pairs of crops to choose a threshold from")
    return np.unique(np.quantile(pooled, np.linspace(0.002, 0.6, count)))


def choose_threshold(games: Sequence[tuple[np.ndarray, np.ndarray]], method: ClusterMethod = "agglomerative",
                     linkage: Linkage = "average", min_samples: int = 2,
                     candidates: np.ndarray | None = None) -> tuple[float, float]:
    """The threshold with the best mean adjusted Rand index over ``games`` ((N, N) distances, (N,) true
    identities) and that mean ARI. candidates: None = ``threshold_candidates``. Ties: the smallest."""
    if not games:
        raise ValueError("no games to choose a threshold on")
    import sklearn
    from sklearn.metrics import adjusted_rand_score

    candidates = threshold_candidates([d for d, _ in games]) if candidates is None else np.asarray(candidates)
    with sklearn.config_context(skip_parameter_validation=True):  # thousands of small fits: validation dominates
        mean_ari = np.array([np.mean([adjusted_rand_score(truth, cluster(d, t, method, linkage, min_samples))
                                      for d, truth in games]) for t in candidates])
    best = int(np.argmax(mean_ari))
    return float(candidates[best]), float(mean_ari[best])
