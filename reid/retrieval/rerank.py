"""k-reciprocal re-ranking, in the two variants of the published implementation: the front ends.

``classic``: Zhong et al. 2017 as CLIP-ReIdent's ``re_ranking`` computes it (reference README "R1").
``hard_weight``: the 2023 paper's post-processing ``postprocess_distance`` ("R2").

Each variant has one engine (``reid.retrieval.classic``, ``reid.retrieval.hard_weight``) that reads
its distances from a source (``reid.retrieval.sources``); the functions here only adapt their inputs:

- ``classic(dist_qg, dist_qq, dist_gg, ...)``: the published signature, for users who hold the three
  squared Euclidean matrices; ``hard_weight(query_feats, gallery_feats, ...)``: the published one.
  Both return the (m, n) matrix, a tensor on the inputs' device when they are tensors, else numpy;
- ``classic_from_features`` / ``hard_weight_from_features``: from features at any scale (the distance
  is computed block by block; no N x N matrix, N = queries + gallery), as the full numpy matrix or each
  query's top K; ``classic_blocks`` / ``hard_weight_blocks`` stream the re-ranked rows block by block
  (for ``reid.retrieval.blockwise_metrics``); ``rerank`` picks the variant by name.

All give the published numbers within 1e-5 (float32 sums in another order: ~1e-7). Features are
L2-normalised float32; numpy arrays and CPU tensors give the same results; CUDA tensors (or
``device="cuda"``) run the distance blocks and the Jaccard sums on the GPU (~1e-7 from the CPU's).

Defaults, each defined once: k1, k2, the hard-weight lambda and expansion threshold are
``reid.config.RerankSettings``'s (the published pipeline's k1 20, k2 6, lambda 0.7), and so is
everything ``rerank`` does by name (the stage scripts' settings); the classic functions keep the
lambda of the published ``re_ranking`` call, ``CLASSIC_LAMBDA`` = 0.3.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
import torch

from reid.config import RerankSettings
from reid.retrieval import classic as classic_engine
from reid.retrieval import hard_weight as hard_weight_engine
from reid.retrieval.arrays import ArrayLike
from reid.retrieval.neighbors import smallest
from reid.retrieval.sources import Block, FeatureDistances, MatrixDistances

RerankOutput = np.ndarray | tuple[np.ndarray, np.ndarray]
PIPELINE = RerankSettings()
CLASSIC_LAMBDA = 0.3
"""lambda of the classic functions: the published evaluator's ``re_ranking(..., lambda_value=0.3)`` (Zhong et al.'s)."""


def classic(dist_qg: ArrayLike, dist_qq: ArrayLike, dist_gg: ArrayLike, k1: int = PIPELINE.k1, k2: int = PIPELINE.k2,
            lambda_value: float = CLASSIC_LAMBDA) -> ArrayLike:
    """Classic k-reciprocal re-ranking from the three distance matrices, as the published ``re_ranking``.

    dist_qg: (m, n), dist_qq: (m, m), dist_gg: (n, n) float32 **squared Euclidean** distances between
    L2-normalised features (``reid.retrieval.distance.squared_euclidean``, unclipped), numpy or torch (the work
    runs where ``dist_qg`` is). Returns the (m, n) float32 re-ranked distance, numpy if ``dist_qg`` is.
    As published, the matrices are squared again and normalised by column, and row i of the working
    distance is column i of [[qq, qg], [qg^T, gg]] (``reid.retrieval.sources.MatrixDistances``);
    definition and method: ``reid.retrieval.classic``. Memory: the inputs, O(N k1^2) and (m, n).
    """
    _check_arguments(k1, k2)
    distances = MatrixDistances(dist_qg, dist_qq, dist_gg)
    return _as_input(classic_engine.rerank_blocks(distances, k1, k2, lambda_value), dist_qg, tuple(dist_qg.shape))


def hard_weight(query_feats: ArrayLike, gallery_feats: ArrayLike, k1: int = PIPELINE.k1, k2: int = PIPELINE.k2,
                lambda_value: float = PIPELINE.lambda_value,
                expansion_threshold: float = PIPELINE.expansion_threshold) -> ArrayLike:
    """The paper's hard-weight post-processing, as the published ``postprocess_distance``.

    query_feats: (m, d), gallery_feats: (n, d) float32 L2-normalised features (numpy or torch; the work
    runs where ``query_feats`` is). The distance is squared Euclidean, used as is. Returns the (m, n)
    float32 distance, numpy if ``query_feats`` is. Definition and method: ``reid.retrieval.hard_weight``.
    """
    _check_arguments(k1, k2)
    device = query_feats.device if isinstance(query_feats, torch.Tensor) else "cpu"
    blocks = hard_weight_blocks(query_feats, gallery_feats, k1, k2, lambda_value, expansion_threshold, device)
    return _as_input(blocks, query_feats, (len(query_feats), len(gallery_feats)))


def classic_from_features(query_feats: ArrayLike, gallery_feats: ArrayLike, k1: int = PIPELINE.k1, k2: int = PIPELINE.k2,
                          lambda_value: float = CLASSIC_LAMBDA, topk: int | None = None, device: str | torch.device = "cpu", *,
                          block_size: int | None = None) -> RerankOutput:
    """Classic k-reciprocal re-ranking (reference R1) from features, without an N x N matrix.

    query_feats: (m, d), gallery_feats: (n, d) L2-normalised float32 (numpy or torch). The distance
    is the squared Euclidean one (what ``classic`` receives as ``dist_qg/dist_qq/dist_gg``).
    Returns the (m, n) float32 re-ranked distance when ``topk`` is None, else ``(indices, distances)``
    (m, topk) int64 / float32: each query's topk best gallery items, ascending.
    device: where the distance blocks and the Jaccard sums run ("cpu" or "cuda").
    block_size: rows per distance block (default: 64 MiB blocks; results do not depend on it).
    """
    _check_arguments(k1, k2, topk, gallery_feats)
    blocks = classic_blocks(query_feats, gallery_feats, k1, k2, lambda_value, device, block_size=block_size)
    return collect_blocks(blocks, len(query_feats), len(gallery_feats), topk)


def classic_blocks(query_feats: ArrayLike, gallery_feats: ArrayLike, k1: int = PIPELINE.k1, k2: int = PIPELINE.k2,
                   lambda_value: float = CLASSIC_LAMBDA, device: str | torch.device = "cpu", *,
                   block_size: int | None = None) -> Iterator[Block]:
    """Classic re-ranking (R1) from features as a stream of query blocks: ``(start, (b, n) float32 tensor)``.

    Does the neighbour pass and the sparse steps now, then yields consecutive row blocks of the
    (m, n) re-ranked matrix on ``device`` (a caller can score or cut each block without ever holding
    m x n). Inputs as ``classic_from_features``.
    """
    _check_arguments(k1, k2)
    distances = FeatureDistances(query_feats, gallery_feats, device, block_size)
    return classic_engine.rerank_blocks(distances, k1, k2, lambda_value)


def hard_weight_from_features(query_feats: ArrayLike, gallery_feats: ArrayLike, k1: int = PIPELINE.k1, k2: int = PIPELINE.k2,
                              lambda_value: float = PIPELINE.lambda_value,
                              expansion_threshold: float = PIPELINE.expansion_threshold, topk: int | None = None,
                              device: str | torch.device = "cpu", *, block_size: int | None = None) -> RerankOutput:
    """The paper's hard-weight re-ranking (reference R2) from features, without an N x N matrix.

    Inputs, outputs, device and block_size as ``classic_from_features``.
    """
    _check_arguments(k1, k2, topk, gallery_feats)
    blocks = hard_weight_blocks(query_feats, gallery_feats, k1, k2, lambda_value, expansion_threshold, device,
                                block_size=block_size)
    return collect_blocks(blocks, len(query_feats), len(gallery_feats), topk)


def hard_weight_blocks(query_feats: ArrayLike, gallery_feats: ArrayLike, k1: int = PIPELINE.k1, k2: int = PIPELINE.k2,
                       lambda_value: float = PIPELINE.lambda_value,
                       expansion_threshold: float = PIPELINE.expansion_threshold, device: str | torch.device = "cpu",
                       *, block_size: int | None = None) -> Iterator[Block]:
    """Hard-weight re-ranking (R2) as a stream of query blocks: ``(start, (b, n) float32 tensor)``.

    Builds the sets now, then yields the blocks as ``classic_blocks`` does. Inputs as
    ``hard_weight_from_features``.
    """
    _check_arguments(k1, k2)
    distances = FeatureDistances(query_feats, gallery_feats, device, block_size)
    return hard_weight_engine.rerank_blocks(distances, k1, k2, lambda_value, expansion_threshold)


def rerank(query_feats: ArrayLike, gallery_feats: ArrayLike, method: Literal["classic", "hard_weight"] = "classic",
           settings: RerankSettings = PIPELINE, *, k1: int | None = None, k2: int | None = None,
           lambda_value: float | None = None, topk: int | None = None,
           device: str | torch.device | None = None) -> RerankOutput:
    """Re-rank from features with the named variant: ``classic_from_features`` or ``hard_weight_from_features``.

    query_feats (m, d), gallery_feats (n, d) L2-normalised float32 (numpy or torch); the distance is
    squared Euclidean. settings: the stage scripts' (``RerankSettings()``: k1 20, k2 6, lambda 0.7 for
    both variants, as the published pipeline); k1 / k2 / lambda_value, when given, replace its values.
    device None = where the features are (numpy: the CPU). Returns the (m, n) float32 numpy matrix,
    or ``(indices, distances)`` of each query's ``topk`` best gallery items (ascending) when topk is given.
    """
    if method not in ("classic", "hard_weight"):
        raise ValueError(f"unknown re-ranking method {method!r}; expected 'classic' or 'hard_weight'")
    settings = settings.replaced(k1=k1, k2=k2, lambda_value=lambda_value)
    if device is None:
        device = query_feats.device if isinstance(query_feats, torch.Tensor) else "cpu"
    if method == "classic":
        return classic_from_features(query_feats, gallery_feats, settings.k1, settings.k2, settings.lambda_value,
                                     topk=topk, device=device)
    return hard_weight_from_features(query_feats, gallery_feats, settings.k1, settings.k2, settings.lambda_value,
                                     settings.expansion_threshold, topk=topk, device=device)


def collect_blocks(blocks: Iterable[Block], num_query: int, num_gallery: int, topk: int | None = None) -> RerankOutput:
    """Gather ``(start, (b, n) block)`` rows into the (m, n) float32 numpy matrix, or keep each row's ``topk``.

    Returns the matrix when topk is None, else ``(indices (m, topk) int64, distances (m, topk)
    float32)`` ascending per row (``torch.topk``: exact ties keep torch's order).
    """
    if topk is None:
        out = np.empty((num_query, num_gallery), dtype=np.float32)
    else:
        indices, values = np.empty((num_query, topk), dtype=np.int64), np.empty((num_query, topk), dtype=np.float32)
    for start, block in blocks:
        stop = start + len(block)
        if topk is None:
            out[start:stop] = block.cpu().numpy()
        else:
            best, where = smallest(block, topk)
            values[start:stop], indices[start:stop] = best.cpu().numpy(), where.cpu().numpy()
    return out if topk is None else (indices, values)


def _as_input(blocks: Iterable[Block], like: ArrayLike, shape: tuple[int, int]) -> ArrayLike:
    """The whole (m, n) matrix of ``blocks``: numpy if ``like`` is numpy, else a tensor where the blocks are."""
    if isinstance(like, np.ndarray):
        return collect_blocks(blocks, *shape)
    return torch.cat([block for _, block in blocks])


def _check_arguments(k1: int, k2: int, topk: int | None = None, gallery_feats: ArrayLike | None = None) -> None:
    if k1 < 1 or not 1 <= k2 <= k1:
        raise ValueError(f"need k1 >= 1 and 1 <= k2 <= k1, got k1={k1}, k2={k2}")
    if topk is not None and not 1 <= topk <= len(gallery_feats):
        raise ValueError(f"topk must be in [1, {len(gallery_feats)}] (the gallery size), got {topk}")
