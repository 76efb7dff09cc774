"""Ranking metrics for re-identification: mAP, CMC (allshots / cuhk03 / market1501) and mINP.

Every function takes ``distmat``: (num_query, num_gallery) distances, smaller = more similar (raw
squared Euclidean, re-ranked or fused: any distance), as a numpy array or a torch tensor (CPU or CUDA;
the work then runs on that device). Ids can be any integers; cameras default to 0 for every query and
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
import torch

Array = np.ndarray | torch.Tensor
CmcConfig = Literal["allshots", "cuhk03", "market1501"]
CMC_CONFIGS: tuple[CmcConfig, ...] = ("allshots", "cuhk03", "market1501")
CUHK03_REPEATS = 10
BLOCK_ELEMENTS = 1 << 20  # query rows per block = this / num_gallery (at least 1)


@dataclass
class RankedGallery:
    """The gallery ranked for a block of b queries; row i lists gallery items in ascending distance.

    All fields are numpy arrays or torch tensors on the distance matrix's device.
    distances: (b, L) ascending along each row (L = num_gallery, or K for a top-K list).
    gallery_codes: (b, L) int64 identity code of the item at each rank (see ``encode_identities``).
    query_codes: (b,) int64 identity code of each query (-1: identity absent from the gallery).
    same_camera: (b, L) bool, the item was taken by the query's camera.
    num_identities: number of identity codes (codes are 0 .. num_identities - 1).
    """

    distances: Array
    gallery_codes: Array
    query_codes: Array
    same_camera: Array
    num_identities: int

    # Cached: AP, INP and the three CMC configs of one block all read them (each a full (b, L) pass).
    @cached_property
    def matches(self) -> Array:
        """(b, L) bool: the item shows the query's identity."""
        return self.gallery_codes == self.query_codes[:, None]

    @cached_property
    def valid(self) -> Array:
        """(b, L) bool: the item takes part in the evaluation."""
        # Exclusion rule: an item of the query's identity seen by the query's camera is ignored.
        return ~(self.matches & self.same_camera)

    @cached_property
    def hits(self) -> Array:
        """(b, L) bool: a valid true match."""
        return self.matches & self.valid

    @cached_property
    def hit_positions(self) -> tuple[Array, Array]:
        """(rows, columns) of every valid true match, row by row and in rank order within a row."""
        return _Ops.of(self.distances).nonzero(self.hits)

    @cached_property
    def valid_so_far(self) -> Array:
        """(b, L) number of valid items up to and including each rank."""
        return _Ops.of(self.distances).cumsum(self.valid)

    @cached_property
    def tie_end(self) -> Array:
        """(b, L) index of the last item tied in distance with each item."""
        return _tie_group_end(self.distances)


def encode_identities(query_ids, gallery_ids) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids (any integers, numpy / list / tensor) -> dense codes.

    Returns (query_codes (m,), gallery_codes (n,), num_identities): gallery ids map to 0 .. U-1 in
    ascending id order; a query id absent from the gallery maps to -1 (it has no true match).
    """
    query_ids, gallery_ids = _numpy(query_ids).ravel(), _numpy(gallery_ids).ravel()
    identities, gallery_codes = np.unique(gallery_ids, return_inverse=True)
    position = np.clip(np.searchsorted(identities, query_ids), 0, max(len(identities) - 1, 0))
    found = identities[position] == query_ids if len(identities) else np.zeros(len(query_ids), bool)
    query_codes = np.where(found, position, -1)
    return query_codes.astype(np.int64), gallery_codes.astype(np.int64).ravel(), len(identities)


def rank_gallery(distances: Array, query_codes: Array, gallery_codes: Array, query_cams: Array,
                 gallery_cams: Array, num_identities: int) -> RankedGallery:
    """Sort each query's row and gather what the metrics need.

    distances: (b, n) rows of the distance matrix; query_codes (b,), gallery_codes (n,) from
    ``encode_identities``; query_cams (b,), gallery_cams (n,) integers. All on the same device.
    numpy rows are ordered by numpy's default ``argsort`` (the published code's, so ties fall the same
    way), torch rows by a stable sort.
    """
    if isinstance(distances, torch.Tensor):
        order = torch.sort(distances, dim=1, stable=True).indices
        sorted_distances = torch.gather(distances, 1, order)
    else:
        order = np.argsort(distances, axis=1)
        sorted_distances = np.take_along_axis(distances, order, axis=1)
    return RankedGallery(
        distances=sorted_distances,
        gallery_codes=gallery_codes[order],
        query_codes=query_codes,
        same_camera=gallery_cams[order] == query_cams[:, None],
        num_identities=num_identities,
    )


def average_precision(ranked: RankedGallery, num_matches: Array | None = None) -> Array:
    """(b,) float64 AP of each query, NaN for a query without a valid true match.

    Equals scikit-learn's ``average_precision_score(matches, -distances)`` on the valid items: each
    true match adds (1 / num_matches) x the precision at the end of its group of tied distances.
    num_matches: (b,) number of valid true matches of each query in the whole gallery; give it when the
    lists are truncated (top-K): AP is then exact if every true match is in the list, else it counts
    the missing ones as never retrieved.
    """
    ops = _Ops.of(ranked.distances)
    hits = ranked.hits
    hits_so_far = ops.cumsum(hits)
    rows, columns = ranked.hit_positions  # only the true matches contribute: gather there, not over whole rows
    tie_end = ranked.tie_end[rows, columns]
    precision = ops.float64(hits_so_far[rows, tie_end]) / ops.clip_min(ranked.valid_so_far[rows, tie_end], 1)
    total = hits_so_far[:, -1] if num_matches is None else ops.asarray(num_matches, like=hits_so_far)
    return ops.divide_or_nan(ops.bincount(rows, precision, hits.shape[0]), total)


def inverse_negative_penalty(ranked: RankedGallery, num_matches: Array | None = None) -> Array:
    """(b,) float64 INP of each query (Ye et al. 2021): num_matches / rank of the hardest true match.

    The rank counts valid items only (1-based); every item tied with the hardest match counts as ranked
    before it, so the order inside ties does not matter. NaN for a query without a valid true match.
    """
    ops = _Ops.of(ranked.distances)
    hits = ranked.hits
    rows, columns = ranked.hit_positions
    valid_at_tie_end = ranked.valid_so_far[rows, ranked.tie_end[rows, columns]]
    hardest = ops.row_max_at(rows, valid_at_tie_end, hits.shape[0])
    total = hits.sum(1) if num_matches is None else ops.asarray(num_matches, like=hardest)
    return ops.divide_or_nan(total, hardest)


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
    ops = _Ops.of(ranked.distances)
    if config not in CMC_CONFIGS:
        raise ValueError(f"unknown CMC config {config!r}; expected one of {', '.join(CMC_CONFIGS)}")
    b = ranked.distances.shape[0]
    if config == "cuhk03":
        valid = ranked.valid & ~ranked.same_camera  # separate camera set
        evaluated = (ranked.matches & valid).any(1)
        positions = _single_shot_positions(ranked, valid, evaluated, rng)  # (b, 10)
        rows, columns = ops.nonzero(evaluated[:, None] & (positions < topk))
        position = positions[rows, columns]
        weights = ops.full(rows.shape, 1.0 / CUHK03_REPEATS, like=positions)
    else:  # only the valid true matches count: work on their positions, not on whole rows
        rows, columns = ranked.hit_positions  # row by row, in rank order
        per_row = ops.bincount(rows, None, b)  # (b,) matches of each query
        evaluated = per_row > 0
        j = ops.arange(rows.shape[0], like=rows) - (ops.cumsum(per_row[None, :])[0] - per_row)[rows]  # index in its row
        position = ranked.valid_so_far[rows, columns] - 1  # 0-based position among the valid items
        if config == "market1501":  # 1 at the first match
            keep = (j == 0) & (position < topk)
        else:  # allshots: the j-th match at position k counts at k - j (valid non-matches before it)
            position = position - j
            keep = position < topk
        rows, position = rows[keep], position[keep]
        weights = ops.full(rows.shape, 1.0, like=position) if config == "market1501" else 1.0 / ops.float64(per_row[rows])
    hits = ops.bincount(rows * topk + position, weights, b * topk).reshape(b, topk)
    return _numpy(hits), _numpy(evaluated)


def ranked_blocks(distmat: Array, query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                  block_rows: int | None = None) -> Iterator[RankedGallery]:
    """``RankedGallery`` for consecutive blocks of query rows of ``distmat`` (m, n), in query order."""
    m, n = distmat.shape
    query_codes, gallery_codes, num_identities = encode_identities(query_ids, gallery_ids)
    if len(query_codes) != m or len(gallery_codes) != n:
        raise ValueError(f"distmat is {m} x {n} but there are {len(query_codes)} query ids and {len(gallery_codes)} gallery ids")
    query_cams = np.zeros(m, np.int64) if query_cams is None else _numpy(query_cams).ravel()
    gallery_cams = np.ones(n, np.int64) if gallery_cams is None else _numpy(gallery_cams).ravel()
    ops = _Ops.of(distmat)
    query_codes, gallery_codes, query_cams, gallery_cams = (
        ops.asarray(a, like=distmat) for a in (query_codes, gallery_codes, query_cams, gallery_cams))
    step = block_rows or max(1, BLOCK_ELEMENTS // max(n, CUHK03_REPEATS * (num_identities + 1)))
    for start in range(0, m, step):
        stop = min(start + step, m)
        yield rank_gallery(distmat[start:stop], query_codes[start:stop], gallery_codes,
                           query_cams[start:stop], gallery_cams, num_identities)


def mean_ap(distmat: Array, query_ids, gallery_ids, query_cams=None, gallery_cams=None) -> float:
    """Mean average precision over the queries that have a valid true match.

    distmat: (num_query, num_gallery) distances (smaller = closer), numpy or torch.
    query_ids (m,), gallery_ids (n,): identities; query_cams (m,), gallery_cams (n,): cameras
    (default 0 for queries, 1 for the gallery). Raises ``RuntimeError`` if no query has a valid match.
    """
    aps = np.concatenate([_numpy(average_precision(r)) for r in ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams)])
    return _mean_of_evaluated(aps)


def mean_inp(distmat: Array, query_ids, gallery_ids, query_cams=None, gallery_cams=None) -> float:
    """Mean inverse negative penalty (mINP) over the queries that have a valid true match.

    Same inputs as ``mean_ap``. Per query: number of valid true matches / (1-based rank of the hardest
    one among the valid items, counting items tied with it as before it).
    """
    inps = np.concatenate([_numpy(inverse_negative_penalty(r)) for r in ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams)])
    return _mean_of_evaluated(inps)


def cmc(distmat: Array, query_ids, gallery_ids, query_cams=None, gallery_cams=None, topk: int = 100,
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
    """mAP, mINP and the three CMC curves of one distance matrix (fractions in [0, 1])."""

    mAP: float
    mINP: float
    cmc: dict[str, np.ndarray]

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


def evaluate(distmat: Array, query_ids, gallery_ids, query_cams=None, gallery_cams=None, topk: int = 100,
             rng: np.random.RandomState | None = None) -> Scores:
    """All the scores of ``mean_ap``, ``mean_inp`` and ``cmc`` (three configs) with one sort per query block.

    Same numbers as the separate calls; cuhk03 is the only one drawing random numbers, so seeding
    numpy once before this call equals seeding before ``cmc(config="cuhk03")``.
    """
    return evaluate_ranked(ranked_blocks(distmat, query_ids, gallery_ids, query_cams, gallery_cams), topk, rng)


def evaluate_ranked(blocks: Iterable[RankedGallery], topk: int = 100, rng: np.random.RandomState | None = None) -> Scores:
    """``evaluate`` on ranked query blocks given in query order (from ``ranked_blocks`` or built
    elsewhere, e.g. from features block by block: ``reid.blockwise_metrics``)."""
    aps, inps = [], []
    totals = {name: np.zeros(topk) for name in CMC_CONFIGS}
    counts = dict.fromkeys(CMC_CONFIGS, 0)
    for ranked in blocks:
        aps.append(_numpy(average_precision(ranked)))
        inps.append(_numpy(inverse_negative_penalty(ranked)))
        for name in CMC_CONFIGS:
            hits, evaluated = cmc_hits(ranked, topk, name, rng)
            totals[name] += hits[evaluated].sum(0)
            counts[name] += int(evaluated.sum())
    if min(counts.values()) == 0:
        raise RuntimeError("no query has a valid true match in the gallery")
    return Scores(
        mAP=_mean_of_evaluated(np.concatenate(aps)),
        mINP=_mean_of_evaluated(np.concatenate(inps)),
        cmc={name: totals[name].cumsum() / counts[name] for name in CMC_CONFIGS},
    )


def _single_shot_positions(ranked: RankedGallery, valid: Array, evaluated: Array, rng) -> Array:
    """(b, 10) position of the true match among the kept items, for each cuhk03 repeat.

    Each repeat keeps one valid item per identity: identities in order of first appearance in the
    ranking, ``randint(0, number of its valid items)`` picks which (the RNG stream of the published
    ``np.random.choice`` loop: queries in order, repeats in order, one call per identity; identities
    with one item draw nothing). The true match's position = number of kept items ranked before it.
    """
    ops = _Ops.of(ranked.distances)
    b, length = valid.shape
    width = ranked.num_identities + 1  # the last code collects the items that are not valid
    keys = ops.where(valid, ranked.gallery_codes, ranked.num_identities)
    grouped = ops.stable_argsort(ops.narrow_int(keys, ranked.num_identities))  # (b, L) ranks grouped by identity, ascending inside a group
    rows = ops.arange(b, like=keys)[:, None]
    counts = ops.bincount((rows * width + keys).reshape(-1), None, b * width).reshape(b, width)
    starts = ops.cumsum(counts) - counts
    first_rank = ops.where(counts > 0, ops.take_rows(grouped, ops.clip_max(starts, length - 1)), length)
    first_rank[:, -1] = length + 1  # the invalid items' group always sorts last
    slot_codes = ops.stable_argsort(ops.narrow_int(first_rank, length + 1))  # (b, width) identities in order of first appearance
    slot_sizes = ops.take_rows(counts, slot_codes)
    slot_starts = ops.take_rows(starts, slot_codes)
    present = ops.arange(width, like=keys)[None, :] < (counts[:, :-1] > 0).sum(1)[:, None]
    drawn = present[:, None, :] & evaluated[:, None, None]  # (b, 10, width)
    drawn = drawn.expand(-1, CUHK03_REPEATS, -1) if isinstance(drawn, torch.Tensor) else np.broadcast_to(drawn, (b, CUHK03_REPEATS, width))
    highs = _numpy(slot_sizes)[:, None, :].repeat(CUHK03_REPEATS, 1)[_numpy(drawn)]
    draws = _randint(rng, highs)
    offsets = np.zeros((b, CUHK03_REPEATS, width), np.int64)
    offsets[_numpy(drawn)] = draws
    picks = slot_starts[:, None, :] + ops.asarray(offsets, like=keys)
    kept_rank = ops.take_rows(grouped, ops.clip_max(picks, length - 1).reshape(b, -1)).reshape(b, CUHK03_REPEATS, width)
    kept_rank = ops.where(drawn, kept_rank, length)
    true_slot = ops.argmax_first(slot_codes == ranked.query_codes[:, None])  # (b,)
    true_rank = kept_rank[ops.arange(b, like=keys), :, true_slot]  # (b, 10)
    return (kept_rank < true_rank[:, :, None]).sum(2)


def _randint(rng, highs: np.ndarray) -> np.ndarray:
    """One draw in [0, high) per entry, in order; identical to that many scalar ``randint`` calls."""
    if rng is None:
        return np.random.randint(0, highs)  # numpy's global legacy state, as the published code
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, highs)
    return rng.randint(0, highs)


def _tie_group_end(distances: Array) -> Array:
    """(b, L) index of the last item whose distance equals that of each item (rows sorted ascending)."""
    ops = _Ops.of(distances)
    length = distances.shape[1]
    last = ops.ones_bool(distances)
    last[:, :-1] = distances[:, :-1] != distances[:, 1:]
    return ops.reverse_cummin(ops.where(last, ops.arange(length, like=distances)[None, :], length))


def _mean_of_evaluated(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]  # queries without a valid true match are skipped
    if kept.size == 0:
        raise RuntimeError("no query has a valid true match in the gallery")
    return float(np.mean(kept))


def _numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


class _Ops:
    """The few array operations whose numpy and torch spellings differ."""

    @staticmethod
    def of(array) -> type:
        return _TorchOps if isinstance(array, torch.Tensor) else _NumpyOps


class _NumpyOps:
    @staticmethod
    def asarray(a, like):
        return np.asarray(_numpy(a))

    @staticmethod
    def cumsum(a):
        return np.cumsum(a, axis=1)

    @staticmethod
    def take_rows(a, index):
        return np.take_along_axis(a, index, axis=1)

    @staticmethod
    def reverse_cummin(a):
        return np.minimum.accumulate(a[:, ::-1], axis=1)[:, ::-1]

    @staticmethod
    def stable_argsort(a):
        return np.argsort(a, axis=1, kind="stable")

    @staticmethod
    def narrow_int(a, max_value):
        # numpy sorts 16-bit integers with a radix sort: much faster than a stable sort of int64
        return a.astype(np.int16) if max_value < np.iinfo(np.int16).max else a

    @staticmethod
    def argmax_first(a):
        return np.argmax(a, axis=1)

    @staticmethod
    def where(condition, a, b):
        return np.where(condition, a, b)

    @staticmethod
    def clip_min(a, low):
        return np.maximum(a, low)

    @staticmethod
    def clip_max(a, high):
        return np.minimum(a, high)

    @staticmethod
    def divide_or_nan(numerator, denominator):
        numerator = np.asarray(numerator, dtype=np.float64)
        denominator = np.asarray(denominator, dtype=np.float64)
        out = np.full(numerator.shape, np.nan)
        np.divide(numerator, denominator, out=out, where=denominator > 0)
        return out

    @staticmethod
    def arange(n, like):
        return np.arange(n)

    @staticmethod
    def full(shape, value, like):
        return np.full(shape, value, dtype=np.float64)

    @staticmethod
    def float64(a):
        return np.asarray(a, dtype=np.float64)

    @staticmethod
    def row_max_at(rows, values, length):
        """(length,) maximum of ``values`` per row index (0 where a row has none); values >= 0."""
        out = np.zeros(length, dtype=values.dtype)
        np.maximum.at(out, rows, values)
        return out

    @staticmethod
    def row_min(a):
        return a.min(1)

    @staticmethod
    def nonzero(a):
        return np.nonzero(a)

    @staticmethod
    def ones_bool(like):
        return np.ones(like.shape, dtype=bool)

    @staticmethod
    def bincount(x, weights, length):
        return np.bincount(x, weights=weights, minlength=length)


class _TorchOps:
    @staticmethod
    def asarray(a, like):
        return torch.as_tensor(a, device=like.device)

    @staticmethod
    def cumsum(a):
        return torch.cumsum(a, dim=1)

    @staticmethod
    def take_rows(a, index):
        return torch.gather(a, 1, index)

    @staticmethod
    def reverse_cummin(a):
        return torch.flip(torch.cummin(torch.flip(a, [1]), dim=1).values, [1])

    @staticmethod
    def stable_argsort(a):
        return torch.sort(a, dim=1, stable=True).indices

    @staticmethod
    def narrow_int(a, max_value):
        return a

    @staticmethod
    def argmax_first(a):
        return torch.argmax(a.to(torch.uint8), dim=1)

    @staticmethod
    def where(condition, a, b):
        return torch.where(condition, a, b)

    @staticmethod
    def clip_min(a, low):
        return torch.clamp(a, min=low)

    @staticmethod
    def clip_max(a, high):
        return torch.clamp(a, max=high)

    @staticmethod
    def divide_or_nan(numerator, denominator):
        numerator, denominator = numerator.double(), denominator.double()
        return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), torch.nan)

    @staticmethod
    def arange(n, like):
        return torch.arange(n, device=like.device)

    @staticmethod
    def full(shape, value, like):
        return torch.full(shape, value, dtype=torch.float64, device=like.device)

    @staticmethod
    def float64(a):
        return a.double()

    @staticmethod
    def row_max_at(rows, values, length):
        return torch.zeros(length, dtype=values.dtype, device=values.device).scatter_reduce_(0, rows, values, "amax")

    @staticmethod
    def row_min(a):
        return a.amin(1)

    @staticmethod
    def nonzero(a):
        return torch.nonzero(a, as_tuple=True)

    @staticmethod
    def ones_bool(like):
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)

    @staticmethod
    def bincount(x, weights, length):
        return torch.bincount(x, weights=weights, minlength=length)
