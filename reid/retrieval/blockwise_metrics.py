"""The metrics at any scale: mAP, mINP and CMC (three configs) from blocks of query rows.

``reid.retrieval.metrics`` ranks a query block at a time; this module feeds it rows that are never held all
at once: raw distances computed from features block by block (``evaluate_features``), re-ranked
blocks as ``reid.retrieval.rerank.classic_blocks`` / ``hard_weight_blocks`` produce them (``evaluate_blocks``),
or each query's top-K list (``evaluate_topk``). Memory beyond the inputs: a few (block,
num_gallery) blocks (the next ones are computed and sorted in a worker thread meanwhile). The
per-query maths is ``reid.retrieval.metrics``'s (AP, INP, CMC hits), so the numbers are the same as
``reid.retrieval.metrics.evaluate`` on the full matrix (exactly, for the same rows; the cuhk03 draws come in
the same query order from the same RNG).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from queue import Full, Queue
from typing import TypeVar

import numpy as np
import torch

from reid.retrieval.arrays import ArrayLike, as_numpy, as_tensor
from reid.retrieval.metrics import (
    RankedGallery,
    Scores,
    average_precision,
    cmc_hits,
    encode_identities,
    evaluate_ranked,
    inverse_negative_penalty,
    ranked_blocks,
)
from reid.retrieval.neighbors import distance_blocks

T = TypeVar("T")


def evaluate_blocks(blocks: Iterable[tuple[int, ArrayLike]], query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                    topk: int = 100, rng: np.random.RandomState | None = None) -> Scores:
    """Scores of a distance matrix given as consecutive row blocks ``(start, (b, n) rows)``.

    blocks: in query order from row 0, numpy or torch (CPU or CUDA); any distance, smaller = closer.
    ids / cams / topk / rng as ``reid.retrieval.metrics.evaluate``. Each block is ranked on the CPU with numpy's
    default ``argsort``, the published order of exactly tied distances (float32 rows of ~10^4 values
    hold a few ties each; cuhk03's draws depend on their order), so the numbers equal
    ``reid.retrieval.metrics.evaluate`` on the numpy matrix.
    """
    query_ids = np.asarray(as_numpy(query_ids)).ravel()
    query_cams = None if query_cams is None else np.asarray(as_numpy(query_cams)).ravel()

    def ranked() -> Iterator[RankedGallery]:
        expected = 0
        for start, block in blocks:
            if start != expected:
                raise ValueError(f"row blocks must be consecutive from row 0: expected a block at row {expected}, got {start}")
            stop = expected = start + len(block)
            cams = None if query_cams is None else query_cams[start:stop]
            yield from ranked_blocks(as_numpy(block), query_ids[start:stop], gallery_ids, cams, gallery_cams)
        if expected != len(query_ids):
            raise ValueError(f"row blocks cover {expected} rows but there are {len(query_ids)} query ids")

    return evaluate_ranked(_prefetched(ranked()), topk, rng)


def evaluate_features(query_feats: ArrayLike, gallery_feats: ArrayLike, query_ids, gallery_ids, query_cams=None,
                      gallery_cams=None, topk: int = 100, rng: np.random.RandomState | None = None,
                      block_size: int | None = None, device: str | torch.device = "cpu") -> Scores:
    """Scores of the raw squared Euclidean distance between features, computed block by block.

    query_feats (m, d), gallery_feats (n, d) float32; the same numbers as ``reid.retrieval.metrics.evaluate``
    on ``reid.retrieval.distance.squared_euclidean(query_feats, gallery_feats)`` without that (m, n) matrix.
    """
    query, gallery = as_tensor(query_feats, device=device), as_tensor(gallery_feats, device=device)
    return evaluate_blocks(distance_blocks(query, gallery, block_size), query_ids, gallery_ids, query_cams, gallery_cams, topk, rng)


@dataclass
class TopkScores:
    """Scores from each query's top-K list, and whether they are exact.

    mAP, mINP and the allshots CMC are exact when every valid true match of every evaluated query is
    in its list (``complete_queries == evaluated_queries``); for a query with missing matches, AP
    counts them as never retrieved (a lower bound), INP and allshots use the matches in the list
    (INP 0 when none is there).
    The market1501 CMC is exact up to rank ``cmc_exact_ranks``: K, less the excluded items
    (query's identity and camera) in the list of a query whose first valid match is not in it.
    cuhk03 needs the whole ranking (its random draws depend on it): use ``evaluate_features`` /
    ``evaluate_blocks``.
    """

    mAP: float
    mINP: float
    cmc: dict[str, np.ndarray]
    evaluated_queries: int
    complete_queries: int
    cmc_exact_ranks: int

    @property
    def exact(self) -> bool:
        """True when every evaluated query has all its valid true matches in its list."""
        return self.complete_queries == self.evaluated_queries


def evaluate_topk(indices: ArrayLike, distances: ArrayLike, query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                  topk: int = 100) -> TopkScores:
    """Scores from top-K lists: ``indices`` (m, K) gallery columns, ``distances`` (m, K) ascending.

    The form ``reid.retrieval.rerank.classic_from_features(..., topk=K)`` returns. CMC curves have
    ``min(topk, K)`` entries (market1501 and allshots; see ``TopkScores`` for exactness).
    """
    indices, distances = as_numpy(indices).astype(np.int64), as_numpy(distances)
    if indices.ndim != 2 or indices.shape != distances.shape:
        raise ValueError(f"indices and distances must both be (num_query, K), got {indices.shape} and {distances.shape}")
    m, length = indices.shape
    query_codes, gallery_codes, num_identities = encode_identities(query_ids, gallery_ids)
    query_cams = np.zeros(m, np.int64) if query_cams is None else as_numpy(query_cams).ravel()
    gallery_cams = np.ones(len(gallery_codes), np.int64) if gallery_cams is None else as_numpy(gallery_cams).ravel()
    ranked = RankedGallery(distances=distances, gallery_codes=gallery_codes[indices], query_codes=query_codes,
                           same_camera=gallery_cams[indices] == query_cams[:, None], num_identities=num_identities)
    num_matches = _valid_match_counts(query_codes, query_cams, gallery_codes, gallery_cams)
    evaluated = num_matches > 0
    found = (ranked.matches & ranked.valid).sum(1)
    open_ended = evaluated & (found == 0)  # first valid match beyond the list: ranks past its valid items unknown
    exact_ranks = int(min(length, ranked.valid[open_ended].sum(1).min(initial=length)))
    aps = average_precision(ranked, num_matches)
    inps = inverse_negative_penalty(ranked)
    curves = {}
    depth = min(topk, length)
    for name in ("allshots", "market1501"):
        hits, _ = cmc_hits(ranked, depth, name)
        curves[name] = hits[evaluated].sum(0).cumsum() / max(int(evaluated.sum()), 1)
    if not evaluated.any():
        raise RuntimeError("no query has a valid true match in the gallery")
    return TopkScores(
        mAP=float(np.mean(aps[evaluated])),
        mINP=float(np.mean(np.nan_to_num(inps[evaluated], nan=0.0))),
        cmc=curves,
        evaluated_queries=int(evaluated.sum()),
        complete_queries=int((evaluated & (found == num_matches)).sum()),
        cmc_exact_ranks=min(exact_ranks, depth),
    )


def _valid_match_counts(query_codes: np.ndarray, query_cams: np.ndarray, gallery_codes: np.ndarray, gallery_cams: np.ndarray) -> np.ndarray:
    """(m,) number of gallery items with the query's identity and another camera (the valid true matches)."""
    cameras, camera_codes = np.unique(np.concatenate([gallery_cams, query_cams]), return_inverse=True)
    gallery_keys = gallery_codes * len(cameras) + camera_codes[:len(gallery_cams)]  # (identity, camera) pairs
    query_keys = np.maximum(query_codes, 0) * len(cameras) + camera_codes[len(gallery_cams):]
    per_identity = np.bincount(gallery_codes, minlength=int(query_codes.max(initial=0)) + 1)
    per_pair = np.bincount(gallery_keys, minlength=int(query_keys.max(initial=0)) + 1)
    return np.where(query_codes >= 0, per_identity[np.maximum(query_codes, 0)] - per_pair[query_keys], 0)


def _prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a worker thread already computes the next ``depth`` of them.

    Here the worker computes distance blocks and sorts them (numpy and torch release the GIL) while
    the caller scores the previous block, so the two cores work at once; every random draw stays in
    the caller, in query order.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put((True, item), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((False, None))
        except BaseException as error:  # handed to the caller
            queue.put((False, error))

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()

