"""Distances between pairs of features of the same player (intra) and of different players (inter).

How well a feature space separates players, as numbers: the distribution of intra-player and
inter-player pair distances (count, mean, std, min, 5 / 50 / 95 % quantiles, max), the separation AUC
(probability that a random same-player pair is closer than a random different-player pair; 1 =
perfect), and d' = (mean inter - mean intra) / sqrt((var intra + var inter) / 2).

The pairs are visited in row blocks, so memory is O(block x N) however many images there are: every
distance goes into a fixed histogram (the quantiles and the AUC come from it, exact to one bin width)
and into running sums (count, mean, std, min and max are exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from reid.retrieval.distance import cosine_distance, squared_euclidean

Metric = Literal["squared_euclidean", "euclidean", "cosine"]
# Upper end of each metric between L2-normalised features (a larger value lands in the last bin).
METRIC_RANGE = {"squared_euclidean": 4.0, "euclidean": 2.0, "cosine": 2.0}
QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class PairDistances:
    """Histograms and exact moments of the intra- and inter-player pair distances.

    edges: (bins + 1,) float64 bin edges in the metric's unit; counts: {"intra", "inter"} -> (bins,)
    int64; total, sum, sum_sq, min, max: {"intra", "inter"} -> float (count, sum of d, sum of d**2).
    """

    metric: Metric
    edges: np.ndarray
    counts: dict[str, np.ndarray]
    total: dict[str, int]
    sum: dict[str, float]
    sum_sq: dict[str, float]
    min: dict[str, float]
    max: dict[str, float]

    def mean(self, kind: str) -> float:
        return self.sum[kind] / self.total[kind] if self.total[kind] else float("nan")

    def std(self, kind: str) -> float:
        if not self.total[kind]:
            return float("nan")
        return float(np.sqrt(max(0.0, self.sum_sq[kind] / self.total[kind] - self.mean(kind) ** 2)))

    def quantile(self, kind: str, q: float) -> float:
        """The q-quantile from the histogram, interpolated linearly inside its bin."""
        counts = self.counts[kind]
        if not self.total[kind]:
            return float("nan")
        cumulative = np.concatenate([[0], np.cumsum(counts)])  # (bins + 1,)
        target = q * cumulative[-1]
        b = int(np.clip(np.searchsorted(cumulative, target, side="left") - 1, 0, len(counts) - 1))
        inside = (target - cumulative[b]) / counts[b] if counts[b] else 0.0
        value = self.edges[b] + inside * (self.edges[b + 1] - self.edges[b])
        return float(np.clip(value, self.min[kind], self.max[kind]))

    def auc(self) -> float:
        """P(intra pair closer than inter pair), ties within a bin counted one half."""
        intra, inter = self.counts["intra"].astype(np.float64), self.counts["inter"].astype(np.float64)
        if not intra.sum() or not inter.sum():
            return float("nan")
        intra, inter = intra / intra.sum(), inter / inter.sum()
        inter_above = inter[::-1].cumsum()[::-1] - inter  # mass of inter pairs in later bins
        return float(np.sum(intra * (inter_above + 0.5 * inter)))

    def d_prime(self) -> float:
        spread = np.sqrt((self.std("intra") ** 2 + self.std("inter") ** 2) / 2)
        return float((self.mean("inter") - self.mean("intra")) / spread) if spread > 0 else float("nan")

    def table(self) -> pd.DataFrame:
        """One row per kind (intra, inter): pairs, mean, std, min, p05, median, p95, max."""
        rows = []
        for kind in ("intra", "inter"):
            quantiles = [self.quantile(kind, q) for q in QUANTILES]
            rows.append({"pairs": kind, "count": self.total[kind], "mean": self.mean(kind), "std": self.std(kind),
                         "min": self.min[kind], "p05": quantiles[0], "median": quantiles[1], "p95": quantiles[2],
                         "max": self.max[kind]})
        return pd.DataFrame(rows)


def pair_distances(features: np.ndarray, players: np.ndarray, other_features: np.ndarray | None = None,
                   other_players: np.ndarray | None = None, metric: Metric = "squared_euclidean", bins: int = 2000,
                   block_size: int = 1024) -> PairDistances:
    """Intra- and inter-player distance statistics of feature pairs.

    features: (N, D) float32, L2-normalised; players: (N,) int ids. Without ``other_features``, every
    unordered pair of distinct rows (N (N - 1) / 2 pairs); with ``other_features`` (M, D) and
    ``other_players`` (M,), every (row, other row) pair (N x M; e.g. queries against the gallery).
    metric: ``squared_euclidean`` (the project's distance), ``euclidean`` or ``cosine`` (1 - cos).
    bins: histogram bins over [0, the metric's maximum between unit vectors].
    """
    features, players = np.asarray(features, dtype=np.float32), np.asarray(players)
    within = other_features is None
    others = features if within else np.asarray(other_features, dtype=np.float32)
    other_players = players if within else np.asarray(other_players)
    if len(players) != len(features) or len(other_players) != len(others):
        raise ValueError("one player id per feature row is needed")
    edges = np.linspace(0.0, METRIC_RANGE[metric], bins + 1)
    kinds = ("intra", "inter")
    counts = {kind: np.zeros(bins, np.int64) for kind in kinds}
    total, sums, sums_sq = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0.0)
    minima, maxima = dict.fromkeys(kinds, np.inf), dict.fromkeys(kinds, -np.inf)
    for start in range(0, len(features), block_size):
        stop = min(start + block_size, len(features))
        dist = _distance(features[start:stop], others, metric)  # (b, M)
        same = players[start:stop, None] == other_players[None, :]  # (b, M)
        # within one set: each unordered pair once, never an image with itself
        counted = (np.arange(start, stop)[:, None] < np.arange(len(others))[None, :]) if within else np.ones_like(same)
        for kind, mask in (("intra", counted & same), ("inter", counted & ~same)):
            values = dist[mask].astype(np.float64)
            if values.size == 0:
                continue
            bin_index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
            counts[kind] += np.bincount(bin_index, minlength=bins)
            total[kind] += values.size
            sums[kind] += float(values.sum())
            sums_sq[kind] += float(np.square(values).sum())
            minima[kind] = min(minima[kind], float(values.min()))
            maxima[kind] = max(maxima[kind], float(values.max()))
    if total["intra"] == 0:
        raise ValueError("no pair of images shares a player: these features carry no identities "
                         "(challenge features are anonymous)")
    if total["inter"] == 0:
        raise ValueError("every pair of images shows the same player: need at least two players")
    return PairDistances(metric, edges, counts, total, sums, sums_sq, minima, maxima)


def _distance(x: np.ndarray, y: np.ndarray, metric: Metric) -> np.ndarray:
    if metric == "squared_euclidean":
        return squared_euclidean(x, y)
    if metric == "euclidean":
        return np.sqrt(np.maximum(squared_euclidean(x, y), 0.0))
    if metric == "cosine":
        return cosine_distance(x, y)
    raise ValueError(f"unknown metric {metric!r}; expected squared_euclidean, euclidean or cosine")
