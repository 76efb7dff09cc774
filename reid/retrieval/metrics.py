"""Ranking metrics for re-identification: mAP, CMC (allshots / cuhk03 / market1501) and mINP.

Every function takes ``distmat``: (num_query, num_gallery) distances, smaller = more similar (raw
squared Euclidean, re-ranked or fused: any distance), as a numpy array (a torch tensor is copied to
one: the ranking is numpy's, the published code's order of tied distances). Ids can be any integers; cameras default to 0 for every query and
1 for every gallery item (what the published test and challenge datasets set), so by default nothing
is excluded.

The numbers equal the published evaluation code (``clipreid/metrics.py``; reference README "M" and
"C"): AP is scikit-learn's ``average_precision_score`` (tied distances form one threshold), the CMC
variants keep their quirks (allshots credits the j-th match at "rank minus j"), and cuhk03 draws its
single-shot gallery with numpy's legacy RNG in the same order, one ``randint`` per identity. Queries are
processed in blocks, so memory beyond the input is O(block x num_gallery).

Building blocks (for blockwise evaluation from features or from a top-K form): ``encode_identities``,
``rank_gallery`` -> ``RankedGallery``, then per query ``average_precision``,
``inverse_negative_penalty`` and ``cmc_hits``; ``ranked_blocks`` chains the first two over a matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from reid.retrieval.arrays import as_numpy

CmcConfig = Literal["allshots", "cuhk03", "market1501"]
CMC_CONFIGS: tuple[CmcConfig, ...] = ("allshots", "cuhk03", "market1501")
CUHK03_REPEATS = 10
BLOCK_ELEMENTS = 1 << 20  # query rows per block = this / num_gallery (at least 1)


@dataclass
class RankedGallery:
    """The gallery ranked for a block of b queries; row i lists gallery items in ascending distance.

    All fields are numpy arrays.
    distances: (b, L) ascending along each row (L = num_gallery, or K for a top-K list).
    gallery_codes: (b, L) int64 identity code of the item at each rank (see ``encode_identities``).
    query_codes: (b,) int64 identity code of each query (-1: identity absent from the gallery).
    same_camera: (b, L) bool, the item was taken by the query's camera.
    num_identities: number of identity codes (codes are 0 .. num_identities - 1).
    """

    distances: np.ndarray
    gallery_codes: np.ndarray
    query_codes: np.ndarray
    same_camera: np.ndarray
    num_identities: int

    # Cached: AP, INP and the three CMC configs of one block all read them (each a full (b, L) pass).
    @cached_property
    def matches(self) -> np.ndarray:
        """(b, L) bool: the item shows the query's identity."""
        return self.gallery_codes == self.query_codes[:, None]

    @cached_property
    def valid(self) -> np.ndarray:
        """(b, L) bool: the item takes part in the evaluation."""
        # Exclusion rule: an item of the query's identity seen by the query's camera is ignored.
        return ~(self.matches & self.same_camera)

    @cached_property
    def hits(self) -> np.ndarray:
        """(b, L) bool: a valid true match."""
        return self.matches & self.valid

    @cached_property
    def hit_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) of every valid true match, row by row and in rank order within a row."""
        return np.nonzero(self.hits)

    @cached_property
    def valid_so_far(self) -> np.ndarray:
        """(b, L) number of valid items up to and including each rank."""
        return np.cumsum(self.valid, axis=1)

    @cached_property
    def tie_end(self) -> np.ndarray:
        """(b, L) index of the last item tied in distance with each item."""
        return _tie_group_end(self.distances)


def encode_identities(query_ids, gallery_ids) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids (any integers, numpy / list / tensor) -> dense codes.

    Returns (query_codes (m,), gallery_codes (n,), num_identities): gallery ids map to 0 .. U-1 in
    ascending id order; a query id absent from the gallery maps to -1 (it has no true match).
    """
    query_ids, gallery_ids = as_numpy(query_ids).ravel(), as_numpy(gallery_ids).ravel()
    identities, gallery_codes = np.unique(gallery_ids, return_inverse=True)
    position = np.clip(np.searchsorted(identities, query_ids), 0, max(len(identities) - 1, 0))
    found = identities[position] == query_ids if len(identities) else np.zeros(len(query_ids), bool)
    query_codes = np.where(found, position, -1)
    return query_codes.astype(np.int64), gallery_codes.astype(np.int64).ravel(), len(identities)


def rank_gallery(distances: np.ndarray, query_codes: np.ndarray, gallery_codes: np.ndarray, query_cams: np.ndarray,
                 gallery_cams: np.ndarray, num_identities: int) -> RankedGallery:
    """Sort each query's row and gather what the metrics need.

    distances: (b, n) rows of the distance matrix; query_codes (b,), gallery_codes (n,) from
    ``encode_identities``; query_cams (b,), gallery_cams (n,) integers. Rows are ordered by numpy's
    default ``argsort`` (the published code's, so ties fall the same way).
    """
    order = np.argsort(distances, axis=1)
    sorted_distances = np.take_along_axis(distances, order, axis=1)
    return RankedGallery(
        distances=sorted_distances,
        gallery_codes=gallery_codes[order],
        query_codes=query_codes,
        same_camera=gallery_cams[order] == query_cams[:, None],
        num_identities=num_identities,
    )


def average_precision(ranked: RankedGallery, num_matches: np.ndarray | None = None) -> np.ndarray:
    """(b,) float64 AP of each query, NaN for a query without a valid true match.

    Equals scikit-learn's ``average_precision_score(matches, -distances)`` on the valid items: each
    true match adds (1 / num_matches) x the precision at the end of its group of tied distances.
    num_matches: (b,) number of valid true matches of each query in the whole gallery; give it when the
    lists are truncated (top-K): AP is then exact if every true match is in the list, else it counts
    the missing ones as never retrieved.
    """
    hits = ranked.hits
    hits_so_far = np.cumsum(hits, axis=1)
    rows, columns = ranked.hit_positions  # only the true matches contribute: gather there, not over whole rows
    tie_end = ranked.tie_end[rows, columns]
    precision = np.asarray(hits_so_far[rows, tie_end], dtype=np.float64) / np.maximum(ranked.valid_so_far[rows, tie_end], 1)
    total = hits_so_far[:, -1] if num_matches is None else as_numpy(num_matches)
    return _divide_or_nan(np.bincount(rows, weights=precision, minlength=hits.shape[0]), total)


def inverse_negative_penalty(ranked: RankedGallery, num_matches: np.ndarray | None = None) -> np.ndarray:
    """(b,) float64 INP of each query (Ye et al. 2021): num_matches / rank of the hardest true match.

    The rank counts valid items only (1-based); every item tied with the hardest match counts as ranked
    before it, so the order inside ties does not matter. NaN for a query without a valid true match.
    """
    hits = ranked.hits
    rows, columns = ranked.hit_positions
    valid_at_tie_end = ranked.valid_so_far[rows, ranked.tie_end[rows, columns]]
    hardest = np.zeros(hits.shape[0], dtype=valid_at_tie_end.dtype)  # per query, the largest (0 without a match)
    np.maximum.at(hardest, rows, valid_at_tie_end)
    total = hits.sum(1) if num_matches is None else as_numpy(num_matches)
    return _divide_or_nan(total, hardest)


def cmc_hits(ranked: RankedGallery, topk: int = 100, config: CmcConfig = "market1501",
             rng: np.random.RandomState | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-query CMC contributions, as the published ``cmc()`` adds them.

    Returns (hits (b, topk) float64, evaluated (b,) bool), both numpy. The curve over all queries is
    ``hits[evaluated].sum(0).cumsum() / evaluated.sum()``. A query is evaluated when it has a valid true
    match (for cuhk03: one from another camera). Positions count valid items only.
    market1501: 1 at the first true match. allshots: with M matches, the j-th (0-based) at position k
    adds 1/M at k - j. cuhk03: 10 repeats; each keeps one item per identity (identities in order of
    first appearance, one ``rng.randint(0, count)`` each; rng None = numpy's global legacy RNG) and adds
    1/10 at the true match's position among the kept items.
    """
    if config not in CMC_CONFIGS:
        raise ValueError(f"unknown CMC config {config!r}; expected one of {', '.join(CMC_CONFIGS)}")
    b = ranked.distances.shape[0]
    if config == "cuhk03":
        valid = ranked.valid & ~ranked.same_camera  # separate camera set
        evaluated = (ranked.matches & valid).any(1)
        positions = _single_shot_positions(ranked, valid, evaluated, rng)  # (b, 10)
        rows, columns = np.nonzero(evaluated[:, None] & (positions < topk))
        position = positions[rows, columns]
        weights = np.full(rows.shape, 1.0 / CUHK03_REPEATS)
    else:  # only the valid true matches count: work on their positions, not on whole rows
        rows, columns = ranked.hit_positions  # row by row, in rank order
        per_row = np.bincount(rows, minlength=b)  # (b,) matches of each query
        evaluated = per_row > 0
        j = np.arange(rows.shape[0]) - (np.cumsum(per_row) - per_row)[rows]  # index in its row
        position = ranked.valid_so_far[rows, columns] - 1  # 0-based position among the valid items
        if config == "market1501":  # 1 at the first match
            keep = (j == 0) & (position < topk)
        else:  # allshots: the j-th match at position k counts at k - j (valid non-matches before it)
            position = position - j
            keep = position < topk
        rows, position = rows[keep], position[keep]
        weights = np.ones(rows.shape) if config == "market1501" else 1.0 / per_row[rows].astype(np.float64)
    hits = np.bincount(rows * topk + position, weights=weights, minlength=b * topk).reshape(b, topk)
    return hits, evaluated


def ranked_blocks(distmat: np.ndarray, query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                  block_rows: int | None = None) -> Iterator[RankedGallery]:
    """``RankedGallery`` for consecutive blocks of query rows of ``distmat`` (m, n), in query order."""
    distmat = as_numpy(distmat)
    m, n = distmat.shape
    query_codes, gallery_codes, num_identities = encode_identities(query_ids, gallery_ids)
    if len(query_codes) != m or len(gallery_codes) != n:
        raise ValueError(f"distmat is {m} x {n} but there are {len(query_codes)} query ids and {len(gallery_codes)} gallery ids")
    query_cams = np.zeros(m, np.int64) if query_cams is None else as_numpy(query_cams).ravel()
    gallery_cams = np.ones(n, np.int64) if gallery_cams is None else as_numpy(gallery_cams).ravel()
    step = block_rows or max(1, BLOCK_ELEMENTS // max(n, CUHK03_REPEATS * (num_identities + 1)))
    for start in range(0, m, step):
        stop = min(start + step, m)
        yield rank_gallery(distmat[start:stop], query_codes[start:stop], gallery_codes,
                           query_cams[start:stop], gallery_cams, num_identities)


def mean_ap(distmat: np.ndarray, query_ids, gallery_ids, query_cams=None, gallery_cams=None) -> float:
    """Mean average precision over the queries that have a valid true match.

    distmat: (num_query, num_gallery) distances (smaller = closer).
    query_ids (m,), gallery_ids (n,): identities; query_cams (m,), gallery_cams (n,): cameras
    (default 0 for queries, 1 for the gallery). Raises ``RuntimeError`` if no query has a valid match.
    """
    aps = np.concatenate([average_precision(r) for r in ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams)])
    return _mean_of_evaluated(aps)


def mean_inp(distmat: np.ndarray, query_ids, gallery_ids, query_cams=None, gallery_cams=None) -> float:
    """Mean inverse negative penalty (mINP) over the queries that have a valid true match.

    Same inputs as ``mean_ap``. Per query: number of valid true matches / (1-based rank of the hardest
    one among the valid items, counting items tied with it as before it).
    """
    inps = np.concatenate([inverse_negative_penalty(r) for r in ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams)])
    return _mean_of_evaluated(inps)


def cmc(distmat: np.ndarray, query_ids, gallery_ids, query_cams=None, gallery_cams=None, topk: int = 100,
        config: CmcConfig = "market1501", rng: np.random.RandomState | None = None) -> np.ndarray:
    """CMC curve (topk,) float64: entry k = score at rank k + 1 (``curve[0]`` is rank-1).

    distmat (num_query, num_gallery), ids and cameras as in ``mean_ap``. config: ``market1501``
    (first match), ``allshots`` or ``cuhk03`` (separate cameras, one random gallery item per identity,
    10 repeats). rng: a ``numpy.random.RandomState`` for cuhk03; None draws from numpy's global legacy
    state, so ``np.random.seed(s)`` before the call reproduces the published numbers.
    """
    totals = np.zeros(topk)
    count = 0
    for ranked in ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams):
        hits, evaluated = cmc_hits(ranked, topk, config, rng)
        totals += hits[evaluated].sum(0)
        count += int(evaluated.sum())
    if count == 0:
        raise RuntimeError("no query has a valid true match in the gallery")
    return totals.cumsum() / count


@dataclass
class Scores:
    """mAP, mINP and the three CMC curves of one distance matrix (fractions in [0, 1]); ``average_precisions``:
    (num_query,) float64 AP of each query, NaN for a query without a valid true match (mAP is their mean)."""

    mAP: float
    mINP: float
    cmc: dict[str, np.ndarray]
    average_precisions: np.ndarray

    def cmc_at(self, ranks: Sequence[int] = (1, 5, 10)) -> dict[str, list[float]]:
        """{config: [score at each rank]} (rank 1 = ``curve[0]``)."""
        return {name: [float(curve[r - 1]) for r in ranks] for name, curve in self.cmc.items()}

    def table(self, ranks: Sequence[int] = (1, 5, 10)) -> str:
        """The scores as a small text table, in percent."""
        lines = [f"mAP   {100 * self.mAP:6.2f} %", f"mINP  {100 * self.mINP:6.2f} %",
                 "CMC         " + "".join(f"{'rank-' + str(r):>9}" for r in ranks)]
        for name, values in self.cmc_at(ranks).items():
            lines.append(f"  {name:<10}" + "".join(f"{100 * v:9.2f}" for v in values))
        return "\n".join(lines)


def evaluate(distmat: np.ndarray, query_ids, gallery_ids, query_cams=None, gallery_cams=None, topk: int = 100,
             rng: np.random.RandomState | None = None) -> Scores:
    """All the scores of ``mean_ap``, ``mean_inp`` and ``cmc`` (three configs) with one sort per query block.

    Same numbers as the separate calls; cuhk03 is the only one drawing random numbers, so seeding
    numpy once before this call equals seeding before ``cmc(config="cuhk03")``.
    """
    return evaluate_ranked(ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams), topk, rng)


def evaluate_ranked(blocks: Iterable[RankedGallery], topk: int = 100, rng: np.random.RandomState | None = None) -> Scores:
    """``evaluate`` on ranked query blocks given in query order (from ``ranked_blocks`` or built
    elsewhere, e.g. from features block by block: ``reid.retrieval.blockwise_metrics``)."""
    aps, inps = [], []
    totals = {name: np.zeros(topk) for name in CMC_CONFIGS}
    counts = dict.fromkeys(CMC_CONFIGS, 0)
    for ranked in blocks:
        aps.append(average_precision(ranked))
        inps.append(inverse_negative_penalty(ranked))
        for name in CMC_CONFIGS:
            hits, evaluated = cmc_hits(ranked, topk, name, rng)
            totals[name] += hits[evaluated].sum(0)
            counts[name] += int(evaluated.sum())
    if min(counts.values()) == 0:
        raise RuntimeError("no query has a valid true match in the gallery")
    aps = np.concatenate(aps)
    return Scores(
        mAP=_mean_of_evaluated(aps),
        mINP=_mean_of_evaluated(np.concatenate(inps)),
        cmc={name: totals[name].cumsum() / counts[name] for name in CMC_CONFIGS},
        average_precisions=aps,
    )


def _single_shot_positions(ranked: RankedGallery, valid: np.ndarray, evaluated: np.ndarray, rng) -> np.ndarray:
    """(b, 10) position of the true match among the kept items, for each cuhk03 repeat.

    Each repeat keeps one valid item per identity: identities in order of first appearance in the
    ranking, ``randint(0, number of its valid items)`` picks which (the RNG stream of the published
    ``np.random.choice`` loop: queries in order, repeats in order, one call per identity; identities
    with one item draw nothing). The true match's position = number of kept items ranked before it.
    """
    b, length = valid.shape
    width = ranked.num_identities + 1  # the last code collects the items that are not valid
    keys = np.where(valid, ranked.gallery_codes, ranked.num_identities)
    grouped = _stable_argsort(_narrow_int(keys, ranked.num_identities))  # (b, L) ranks grouped by identity, ascending inside a group
    rows = np.arange(b)[:, None]
    counts = np.bincount((rows * width + keys).reshape(-1), minlength=b * width).reshape(b, width)
    starts = np.cumsum(counts, axis=1) - counts
    first_rank = np.where(counts > 0, np.take_along_axis(grouped, np.minimum(starts, length - 1), axis=1), length)
    first_rank[:, -1] = length + 1  # the invalid items' group always sorts last
    slot_codes = _stable_argsort(_narrow_int(first_rank, length + 1))  # (b, width) identities in order of first appearance
    slot_sizes = np.take_along_axis(counts, slot_codes, axis=1)
    slot_starts = np.take_along_axis(starts, slot_codes, axis=1)
    present = np.arange(width)[None, :] < (counts[:, :-1] > 0).sum(1)[:, None]
    drawn = np.broadcast_to(present[:, None, :] & evaluated[:, None, None], (b, CUHK03_REPEATS, width))  # (b, 10, width)
    highs = slot_sizes[:, None, :].repeat(CUHK03_REPEATS, 1)[drawn]
    draws = _randint(rng, highs)
    offsets = np.zeros((b, CUHK03_REPEATS, width), np.int64)
    offsets[drawn] = draws
    picks = slot_starts[:, None, :] + offsets
    kept_rank = np.take_along_axis(grouped, np.minimum(picks, length - 1).reshape(b, -1), axis=1).reshape(b, CUHK03_REPEATS, width)
    kept_rank = np.where(drawn, kept_rank, length)
    true_slot = np.argmax(slot_codes == ranked.query_codes[:, None], axis=1)  # (b,)
    true_rank = kept_rank[np.arange(b), :, true_slot]  # (b, 10)
    return (kept_rank < true_rank[:, :, None]).sum(2)


def _randint(rng, highs: np.ndarray) -> np.ndarray:
    """One draw in [0, high) per entry, in order; identical to that many scalar ``randint`` calls."""
    if rng is None:
        return np.random.randint(0, highs)  # numpy's global legacy state, as the published code
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, highs)
    return rng.randint(0, highs)


def _tie_group_end(distances: np.ndarray) -> np.ndarray:
    """(b, L) index of the last item whose distance equals that of each item (rows sorted ascending)."""
    length = distances.shape[1]
    last = np.ones(distances.shape, dtype=bool)
    last[:, :-1] = distances[:, :-1] != distances[:, 1:]
    ends = np.where(last, np.arange(length)[None, :], length)
    return np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]  # the next group end at or after each item


def _mean_of_evaluated(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]  # queries without a valid true match are skipped
    if kept.size == 0:
        raise RuntimeError("no query has a valid true match in the gallery")
    return float(np.mean(kept))




def _divide_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator in float64, NaN where the denominator is 0 (a query without a true match)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    return np.argsort(keys, axis=1, kind="stable")


def _narrow_int(keys: np.ndarray, max_value: int) -> np.ndarray:
    # numpy sorts 16-bit integers with a radix sort: much faster than a stable sort of int64
    return keys.astype(np.int16) if max_value < np.iinfo(np.int16).max else keys
