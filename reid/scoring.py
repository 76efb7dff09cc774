"""Scoring: features -> distances -> re-rankings -> scores, for the held-out evaluation, evaluate.py, predict.py, search.py.

Distances are squared Euclidean between L2-normalised float32 features
(``reid.retrieval.distance.squared_euclidean``); the re-rankings are those of
``reid.retrieval.rerank`` with a ``reid.config.RerankSettings`` (the published pipeline's k1 20, k2 6,
lambda 0.7 for both), fitted to the set sizes by ``RerankSettings.fitted`` (k1 shrinks, with a note,
where a split has fewer images than its neighbour lists need). Each matrix is sorted once
(``reid.retrieval.metrics.evaluate``) for all its scores: mAP, rank-1/5/10 (the market1501 CMC,
first true match), mINP and the training log's CMC table. As in the published evaluation, queries
have camera 0 and gallery images camera 1, so no gallery image is excluded. Where the work runs:
``device`` (``reid.devices.resolve_device`` decides it; the features are moved there, so a GPU
computes the distance blocks and the Jaccard sums).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from reid.config import RerankSettings
from reid.retrieval import metrics, rerank
from reid.retrieval.arrays import ArrayLike, as_numpy, as_tensor
from reid.retrieval.distance import squared_euclidean

DistanceName = Literal["raw", "classic", "hard"]
DISTANCES: tuple[DistanceName, ...] = ("raw", "classic", "hard")
VARIANTS = {"classic": "classic", "hard": "hard_weight"}  # re-ranked distance -> reid.retrieval.rerank variant
SCORES = ("map", "rank1", "rank5", "rank10", "minp")
CMC_RANKS = (1, 5, 10)


def print_note(message: str) -> None:
    """How a stage script tells the user that its settings were adapted: ``note: <message>`` on stdout."""
    print(f"note: {message}")


def distance_matrices(query_feats: ArrayLike, gallery_feats: ArrayLike, distances: Sequence[DistanceName] = DISTANCES,
                      settings: RerankSettings = RerankSettings(), device: str | torch.device | None = None,
                      note: Callable[[str], None] | None = print_note) -> dict[str, np.ndarray]:
    """{distance name: (num_query, num_gallery) float32 numpy} for each name of ``distances``.

    query_feats: (m, D), gallery_feats: (n, D) L2-normalised float32 (numpy or torch). ``raw`` =
    squared Euclidean; ``classic`` = k-reciprocal re-ranking, ``hard`` = the paper's hard-weight
    re-ranking, both from the features blockwise (``reid.retrieval.rerank.rerank``: no N x N matrix)
    with ``settings``, shrunk for small sets (``RerankSettings.fitted``; ``note`` receives the sentence
    saying so, None = silent). device: where the distances and re-rankings run; None = where the features are.
    """
    unknown = sorted(set(distances) - set(DISTANCES))
    if unknown:
        raise ValueError(f"unknown distance(s) {unknown}; expected some of {DISTANCES}")
    if device is not None and torch.device(device).type != "cpu":
        query_feats, gallery_feats = as_tensor(query_feats, device), as_tensor(gallery_feats, device)

    def compute(name: DistanceName) -> ArrayLike:
        if name == "raw":
            return squared_euclidean(query_feats, gallery_feats)
        fitted, shrunk = settings.fitted(len(query_feats), len(gallery_feats), VARIANTS[name])
        if shrunk and note is not None:
            note(shrunk)
        return rerank.rerank(query_feats, gallery_feats, VARIANTS[name], settings=fitted)

    return {name: as_numpy(compute(name), dtype=np.float32) for name in distances}


def evaluate_matrices(matrices: dict[str, np.ndarray], query_ids: np.ndarray,
                      gallery_ids: np.ndarray) -> dict[str, metrics.Scores]:
    """{distance: ``reid.retrieval.metrics.Scores``} of each (m, n) matrix, each sorted once: mAP, mINP and
    the three CMC curves to rank 10 (cuhk03 drawn from ``np.random.RandomState(0)``, so the same
    matrix gives the same table); ids: (m,), (n,) player ids."""
    return {distance: metrics.evaluate(values, query_ids, gallery_ids, topk=max(CMC_RANKS), rng=np.random.RandomState(0))
            for distance, values in matrices.items()}


def scores_of(evaluations: dict[str, metrics.Scores]) -> dict[str, float]:
    """{``<score>_<distance>``: fraction} (``map_raw``, ``rank1_hard``, ..., the names of ``metrics.csv``) of
    each evaluated distance; rank-k is the market1501 CMC at k."""
    scores = {}
    for distance, result in evaluations.items():
        curve = result.cmc["market1501"]
        values = {"map": result.mAP, **{f"rank{k}": curve[k - 1] for k in CMC_RANKS}, "minp": result.mINP}
        scores |= {f"{score}_{distance}": float(values[score]) for score in SCORES}
    return scores


def score_matrices(matrices: dict[str, np.ndarray], query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict[str, float]:
    """``scores_of(evaluate_matrices(...))``: {``<score>_<distance>``: fraction} of each (m, n) matrix."""
    return scores_of(evaluate_matrices(matrices, query_ids, gallery_ids))


@dataclass
class Evaluation:
    """One feature set's matrices ({distance: (m, n) float32}) and their scores ({distance: ``Scores``})."""

    matrices: dict[str, np.ndarray]
    results: dict[str, metrics.Scores]

    @property
    def scores(self) -> dict[str, float]:
        """{``<score>_<distance>``: fraction} of the distances computed (``scores_of``)."""
        return scores_of(self.results)

    def cmc_table(self, ranks: Sequence[int] = CMC_RANKS) -> str:
        """The training log's CMC table of these matrices (``cmc_table``)."""
        return cmc_table(self.results, next(iter(self.matrices.values())).shape[1], ranks)


def evaluate_features(query_feats: ArrayLike, gallery_feats: ArrayLike, query_ids: np.ndarray, gallery_ids: np.ndarray,
                      distances: Sequence[DistanceName] = DISTANCES, settings: RerankSettings = RerankSettings(),
                      device: str | torch.device | None = None,
                      note: Callable[[str], None] | None = print_note) -> Evaluation:
    """The held-out evaluation of one feature set (the per-epoch one of training, and evaluate.py's):
    ``distance_matrices`` (same arguments), then ``evaluate_matrices`` (ids: (m,), (n,) player ids)."""
    matrices = distance_matrices(query_feats, gallery_feats, distances, settings, device, note)
    return Evaluation(matrices, evaluate_matrices(matrices, query_ids, gallery_ids))


def complete_scores(scores: dict[str, float]) -> dict[str, float]:
    """Every ``<score>_<distance>`` key in the order of ``metrics.csv``; distances not computed are NaN."""
    return {f"{score}_{name}": scores.get(f"{score}_{name}", math.nan) for score in SCORES for name in DISTANCES}


def cmc_table(evaluations: dict[str, metrics.Scores], num_gallery: int, ranks: Sequence[int] = CMC_RANKS) -> str:
    """The CMC scores the published training log printed for each evaluated matrix: allshots, cuhk03 and
    market1501 at ``ranks`` (at most 10), in percent; num_gallery: the gallery size (a smaller one stops the curve)."""
    lines = [f"{'CMC':10}{'':6}" + "".join(f"{name:>12}" for name in metrics.CMC_CONFIGS)]
    for distance, result in evaluations.items():
        for rank in ranks:
            position = min(rank, num_gallery) - 1
            lines.append(f"{distance if rank == ranks[0] else '':10}top-{rank:<2}"
                         + "".join(f"{100 * result.cmc[name][position]:12.2f}" for name in metrics.CMC_CONFIGS))
    return "\n".join(lines)


def format_scores(scores: dict[str, float], distances: Sequence[str] = DISTANCES) -> str:
    """A small text table: one row per distance, mAP / rank-1 / rank-5 / rank-10 / mINP in percent."""
    lines = [f"{'':10}{'mAP':>8}{'R1':>8}{'R5':>8}{'R10':>8}{'mINP':>8}"]
    for name in distances:
        values = [scores.get(f"{score}_{name}", math.nan) for score in SCORES]
        if all(math.isnan(v) for v in values):
            continue
        lines.append(f"{name:10}" + "".join(f"{100 * v:8.2f}" for v in values))
    return "\n".join(lines)
