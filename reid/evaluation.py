"""Held-out evaluation: features -> distances -> scores (raw, classic and hard-weight re-ranking).

Used after every training epoch and by ``evaluate.py``. Distances are squared Euclidean between
L2-normalised float32 features (``reid.distance.squared_euclidean``); the re-rankings are those of
``reid.retrieval.rerank`` with the published settings (k1 20, k2 6, lambda 0.7 for both); rank-k is the
market1501 CMC (first true match). As in the published evaluation, queries have camera 0 and
gallery images camera 1, so no gallery image is excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from reid import metrics
from reid.data import ImageDataset, image_paths
from reid.distance import ArrayLike, squared_euclidean
from reid.engine import extract_features
from reid.errors import InputError
from reid.models import Encoder
from reid.retrieval import rerank
from reid.transforms import eval_transform

DistanceName = Literal["raw", "classic", "hard"]
DISTANCES: tuple[DistanceName, ...] = ("raw", "classic", "hard")
SCORES = ("map", "rank1", "rank5", "rank10", "minp")


def score_distances(dist: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict[str, float]:
    """dist: (num_query, num_gallery) float32, smaller = more similar; ids: player ids.
    Returns {"map", "rank1", "rank5", "rank10", "minp"} as fractions in [0, 1]."""
    query_cams = np.zeros(len(query_ids), dtype=np.int64)
    gallery_cams = np.ones(len(gallery_ids), dtype=np.int64)
    curve = metrics.cmc(dist, query_ids, gallery_ids, query_cams, gallery_cams, topk=10, config="market1501")
    at = lambda k: float(curve[min(k, len(curve)) - 1])  # noqa: E731  (galleries smaller than k)
    return {
        "map": float(metrics.mean_ap(dist, query_ids, gallery_ids, query_cams, gallery_cams)),
        "rank1": at(1), "rank5": at(5), "rank10": at(10),
        "minp": float(metrics.mean_inp(dist, query_ids, gallery_ids, query_cams, gallery_cams)),
    }


def distance_matrices(query_feats: ArrayLike, gallery_feats: ArrayLike, distances: Sequence[DistanceName] = DISTANCES,
                      k1: int = 20, k2: int = 6, lambda_value: float = 0.7) -> dict[str, np.ndarray]:
    """{distance name: (num_query, num_gallery) float32 numpy} for each name of ``distances``.

    query_feats: (m, D), gallery_feats: (n, D) L2-normalised float32 (numpy or torch; a CUDA tensor
    computes on the GPU). ``raw`` = squared Euclidean; ``classic`` = k-reciprocal re-ranking (from the
    squared Euclidean qg / qq / gg distances); ``hard`` = the paper's hard-weight re-ranking (from the
    features), both with k1, k2, lambda_value, computed from the features blockwise
    (``reid.retrieval.rerank.rerank``: no N x N matrix, where the features are).
    """
    unknown = sorted(set(distances) - set(DISTANCES))
    if unknown:
        raise ValueError(f"unknown distance(s) {unknown}; expected some of {DISTANCES}")
    settings = {"k1": k1, "k2": k2, "lambda_value": lambda_value}
    compute = {
        "raw": lambda: squared_euclidean(query_feats, gallery_feats),
        "classic": lambda: rerank.rerank(query_feats, gallery_feats, "classic", **settings),
        "hard": lambda: rerank.rerank(query_feats, gallery_feats, "hard_weight", **settings),
    }
    return {name: _numpy_float32(compute[name]()) for name in distances}


def _numpy_float32(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def score_matrices(matrices: dict[str, np.ndarray], query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict[str, float]:
    """{``<score>_<distance>``: fraction} for each (m, n) matrix of ``matrices`` (``map_raw``, ``rank1_hard``, ...,
    the names of ``metrics.csv``); ids: (m,), (n,) player ids."""
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    scores = {}
    for distance, values in matrices.items():
        scores |= {f"{score}_{distance}": value for score, value in score_distances(values, query_ids, gallery_ids).items()}
    return scores


def evaluate_features(query_feats: ArrayLike, gallery_feats: ArrayLike, query_ids: np.ndarray, gallery_ids: np.ndarray,
                      k1: int = 20, k2: int = 6, lambda_value: float = 0.7, rerank_distances: bool = True) -> dict[str, float]:
    """Scores of one feature set: every key ``<score>_<distance>`` (``map_raw``, ``rank1_classic``, ``minp_hard``, ...).

    query_feats: (m, D), gallery_feats: (n, D) L2-normalised float32; ids: (m,), (n,) player ids.
    Distances as ``distance_matrices``; rerank_distances=False: raw scores only (re-ranked ones NaN).
    """
    names = DISTANCES if rerank_distances else ("raw",)
    matrices = distance_matrices(query_feats, gallery_feats, names, k1=k1, k2=k2, lambda_value=lambda_value)
    return complete_scores(score_matrices(matrices, query_ids, gallery_ids))


def complete_scores(scores: dict[str, float]) -> dict[str, float]:
    """Every ``<score>_<distance>`` key in the order of ``metrics.csv``; distances not computed are NaN."""
    return {f"{score}_{name}": scores.get(f"{score}_{name}", math.nan) for score in SCORES for name in DISTANCES}


def cmc_table(matrices: dict[str, np.ndarray], query_ids: np.ndarray, gallery_ids: np.ndarray,
              ranks: Sequence[int] = (1, 5, 10)) -> str:
    """The CMC scores the published training log printed for each matrix: allshots, cuhk03 and
    market1501 at ``ranks``, in percent. cuhk03 draws one gallery image per identity (10 repeats)
    from ``np.random.RandomState(0)``, so the table is the same for the same matrix."""
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    query_cams = np.zeros(len(query_ids), dtype=np.int64)
    gallery_cams = np.ones(len(gallery_ids), dtype=np.int64)
    lines = [f"{'CMC':10}{'':6}" + "".join(f"{name:>12}" for name in metrics.CMC_CONFIGS)]
    for distance, values in matrices.items():
        curves = metrics.evaluate(values, query_ids, gallery_ids, query_cams, gallery_cams, topk=max(ranks),
                                  rng=np.random.RandomState(0)).cmc
        for rank in ranks:
            position = min(rank, len(gallery_ids)) - 1
            lines.append(f"{distance if rank == ranks[0] else '':10}top-{rank:<2}"
                         + "".join(f"{100 * curves[name][position]:12.2f}" for name in metrics.CMC_CONFIGS))
    return "\n".join(lines)


def features_for_frame(encoder: Encoder, df: pd.DataFrame, data_dir: str | Path, device: torch.device,
                       batch_size: int = 64, num_workers: int = 0, flip: bool = False,
                       amp_dtype: torch.dtype | None = None, verbose: bool = False,
                       rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Features of the images of ``df`` (rows with ``folder`` and ``img_id``), in row order.

    Letterbox + normalisation at the encoder's size and statistics. Under DDP (world_size > 1) each
    rank encodes a contiguous share and the shares are gathered, so every rank gets all rows.
    Returns (len(df), D) float32, L2-normalised.
    """
    paths = image_paths(df, data_dir)
    shares = np.array_split(np.arange(len(paths)), world_size)
    mine = [paths[i] for i in shares[rank]]
    dataset = ImageDataset(mine, eval_transform(encoder.img_size, encoder.mean, encoder.std))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    features = extract_features(encoder, loader, device, flip=flip, amp_dtype=amp_dtype, verbose=verbose) if mine else None
    if world_size == 1:
        return features
    gathered: list[np.ndarray | None] = [None] * world_size
    dist.all_gather_object(gathered, features)
    return np.concatenate([part for part in gathered if part is not None])


def check_finite_features(features: np.ndarray, checkpoint: str | Path) -> np.ndarray:
    """``features`` (N, D) unchanged; ``InputError`` naming ``checkpoint`` when a row holds NaN or inf
    (no distance, score or matrix is ever computed from them)."""
    bad = int((~np.isfinite(features)).any(axis=1).sum())
    if bad:
        raise InputError(f"{checkpoint}: the features of {bad} of {len(features)} images hold NaN or infinite values: "
                         "its weights are broken (a diverged run?), or they overflow in half precision (then try "
                         "without mixed precision)")
    return features


def format_scores(scores: dict[str, float], distances: Sequence[str] = DISTANCES) -> str:
    """A small text table: one row per distance, mAP / rank-1 / rank-5 / rank-10 / mINP in percent."""
    lines = [f"{'':10}{'mAP':>8}{'R1':>8}{'R5':>8}{'R10':>8}{'mINP':>8}"]
    for name in distances:
        values = [scores.get(f"{score}_{name}", math.nan) for score in SCORES]
        if all(math.isnan(v) for v in values):
            continue
        lines.append(f"{name:10}" + "".join(f"{100 * v:8.2f}" for v in values))
    return "\n".join(lines)
