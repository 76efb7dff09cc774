"""Held-out evaluation: features -> distances -> scores (raw, classic and hard-weight re-ranking).

Used after every training epoch and by ``evaluate.py``. Distances are squared Euclidean between
L2-normalised float32 features (``reid.distance.squared_euclidean``); the re-rankings are those of
``reid.rerank`` with the published settings (k1 20, k2 6, lambda 0.7 for both); rank-k is the
market1501 CMC (first true match). As in the published evaluation, queries have camera 0 and
gallery images camera 1, so no gallery image is excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from reid import metrics, rerank
from reid.data import ImageDataset, image_paths
from reid.distance import squared_euclidean
from reid.engine import extract_features
from reid.models import Encoder
from reid.transforms import eval_transform

DISTANCES = ("raw", "classic", "hard")
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


def evaluate_features(query_feats: np.ndarray, gallery_feats: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
                      k1: int = 20, k2: int = 6, lambda_value: float = 0.7, rerank_distances: bool = True,
                      dense_threshold: int = rerank.DENSE_THRESHOLD) -> dict[str, float]:
    """Scores of one feature set: keys ``<score>_<distance>`` (``map_raw``, ``rank1_classic``, ``minp_hard``, ...).

    query_feats: (m, D), gallery_feats: (n, D) L2-normalised float32; ids: (m,), (n,) player ids.
    Classic re-ranking gets the squared Euclidean qg / qq / gg matrices; hard-weight re-ranking the
    features (as the published code). rerank_distances=False: raw scores only (re-ranked ones NaN).
    Above ``dense_threshold`` images (m + n) the re-rankings take the sparse path (``reid.rerank.rerank``).
    """
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    dist_qg = squared_euclidean(query_feats, gallery_feats)  # (m, n)
    distances = {"raw": dist_qg}
    if rerank_distances:
        settings = {"k1": k1, "k2": k2, "lambda_value": lambda_value, "dense_threshold": dense_threshold}
        distances["classic"] = rerank.rerank(query_feats, gallery_feats, "classic", **settings)
        distances["hard"] = rerank.rerank(query_feats, gallery_feats, "hard_weight", **settings)
    values = {name: score_distances(np.asarray(dist), query_ids, gallery_ids) for name, dist in distances.items()}
    return {f"{score}_{name}": values[name][score] if name in values else math.nan for score in SCORES for name in DISTANCES}


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


def format_scores(scores: dict[str, float], distances: Sequence[str] = DISTANCES) -> str:
    """A small text table: one row per distance, mAP / rank-1 / rank-5 / rank-10 / mINP in percent."""
    lines = [f"{'':10}{'mAP':>8}{'R1':>8}{'R5':>8}{'R10':>8}{'mINP':>8}"]
    for name in distances:
        values = [scores.get(f"{score}_{name}", math.nan) for score in SCORES]
        if all(math.isnan(v) for v in values):
            continue
        lines.append(f"{name:10}" + "".join(f"{100 * v:8.2f}" for v in values))
    return "\n".join(lines)
