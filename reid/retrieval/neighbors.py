"""Blockwise nearest-neighbour search and reciprocal-neighbour masks, never holding an N x N matrix.

The re-rankings (``reid.retrieval.classic``, ``reid.retrieval.hard_weight``) only look at each image's
few nearest neighbours, plus a few whole-row quantities (a row maximum, a row L2 norm). They get both
by walking the distance matrix in blocks computed with ``reid.retrieval.distance.squared_euclidean`` (torch
matmul, CPU or CUDA), each reduced to ``topk`` lists and row statistics, then dropped: row blocks against all
columns (``distance_blocks``), or, for the N x N matrix of one set against itself, only the blocks on
and above the diagonal, the others being their transposes (``symmetric_distance_blocks``: half the
matmul), with per-row lists merged block by block (``RunningSmallest``).

Bit-exactness with the dense matrices (``squared_euclidean`` of whole sets, as published): BLAS
(MKL/OpenBLAS on the CPU) computes each entry of a matmul with the same arithmetic whatever the shape
of the call, *except* for very thin calls (fewer than ~16 rows take a matrix-vector path with another
summation order). Blocks are therefore never thin
(``row_blocks`` shifts the last block back, ``square_blocks`` lets it take the remainder,
``full_rows`` pads). With that, distances here are bit-identical to the dense matrices on the CPU
(checked in the tests) and so are the neighbour lists: rows whose lists hold an exact tie
(duplicate images) are redone on their full row, where ``torch.topk`` (or numpy's ``argsort``)
orders them as the published code does. On CUDA, cuBLAS may pick shape-dependent kernels: distances
then agree to ~1e-7.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from reid.retrieval.arrays import ArrayLike, as_tensor
from reid.retrieval.distance import squared_euclidean

BLOCK_ELEMENTS = 1 << 24
"""Default distance-block budget: 16 Mi float32 entries (64 MiB) per block."""

MIN_BLOCK_ROWS = 64
"""Blocks are never thinner than this (see the module docstring: thin matmuls round differently)."""


def block_rows_for(num_cols: int, block_size: int | None = None) -> int:
    """Rows per distance block: ``block_size`` if given, else what fits ``BLOCK_ELEMENTS``; at least 64."""
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return max(MIN_BLOCK_ROWS, block_size or BLOCK_ELEMENTS // max(num_cols, 1))


def row_blocks(num_rows: int, block: int) -> Iterator[tuple[int, int, int]]:
    """Cover ``range(num_rows)`` with blocks of ``block`` rows: yields ``(start, keep, stop)``.

    Compute rows ``start:stop`` and keep rows ``keep:stop`` (the last block is moved back so that it
    still has ``min(block, num_rows)`` rows; ``keep - start`` rows of it were already done).
    """
    for keep in range(0, num_rows, block):
        stop = min(keep + block, num_rows)
        yield max(0, min(keep, stop - block)), keep, stop


def distance_blocks(rows: torch.Tensor, cols: torch.Tensor, block_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Squared Euclidean distance of ``rows`` (r, d) to ``cols`` (c, d), one row block at a time.

    Yields ``(keep, dist)``: ``dist`` (stop - keep, c) float32 on the tensors' device holds rows
    ``keep:stop`` of the full (r, c) matrix, bit-identical to ``squared_euclidean(rows, cols)`` on the CPU.
    """
    block = block_rows_for(cols.shape[0], block_size)
    col_norms = cols.pow(2).sum(dim=1)  # (c,) once, not once per block
    for start, keep, stop in row_blocks(rows.shape[0], block):
        dist = squared_euclidean(rows[start:stop], cols, y_squared_norms=col_norms)  # (stop - start, c)
        yield keep, dist[keep - start:]


def smallest(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row, ascending: ``(values (r, k), indices (r, k) int64)``.

    ``torch.topk(largest=False, sorted=True)``, as the published code: exact ties keep torch's order.
    """
    return torch.topk(values, min(k, values.shape[1]), dim=1, largest=False, sorted=True)


def square_blocks(num: int, block: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` blocks covering ``range(num)``: ``block`` long, the last one
    taking the remainder so that none is thinner than ``MIN_BLOCK_ROWS`` (unless ``num`` is)."""
    starts = list(range(0, num, block))
    if len(starts) > 1 and num - starts[-1] < MIN_BLOCK_ROWS:
        starts.pop()
    return list(zip(starts, starts[1:] + [num]))


def symmetric_distance_blocks(features: torch.Tensor, block_size: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The whole (N, N) squared Euclidean distance of ``features`` (N, d), block by block, computing half.

    Yields ``(row_start, col_start, block)`` covering the matrix once (blocks are the caller's to
    modify, until they ask for the next one); each block on or above the diagonal is computed, the one
    below is its transpose (D is symmetric bit for bit on the CPU: the norms are added in either order
    and the matmul sums each product in the same order).
    block_size: side of the square blocks (default: ``BLOCK_ELEMENTS`` entries; at least 64).
    """
    side = max(MIN_BLOCK_ROWS, block_size or math.isqrt(BLOCK_ELEMENTS))
    blocks = square_blocks(features.shape[0], side)
    norms = features.pow(2).sum(dim=1)  # (N,)
    scratch = Scratch()
    for i, (r0, r1) in enumerate(blocks):
        for c0, c1 in blocks[i:]:
            dist = squared_euclidean(features[r0:r1], features[c0:c1], y_squared_norms=norms[c0:c1])
            mirror = scratch.transposed(dist) if c0 != r0 else None  # taken first: callers may modify dist
            yield r0, c0, dist
            if mirror is not None:
                yield c0, r0, mirror


class Scratch:
    """One reused buffer for the many same-sized temporary blocks of a pass.

    A fresh large tensor is fresh memory (on Linux, mapped and zeroed by the kernel page by page: about
    a sixth of a pass's time when every block is new); reusing one buffer pays that once.
    """

    def __init__(self):
        self.buffer: torch.Tensor | None = None

    def copy(self, block: torch.Tensor) -> torch.Tensor:
        """A contiguous copy of ``block`` in the buffer (valid until the next call)."""
        count = block.numel()
        if self.buffer is None or self.buffer.numel() < count or self.buffer.device != block.device:
            self.buffer = torch.empty(count, dtype=torch.float32, device=block.device)
        return self.buffer[:count].view(block.shape).copy_(block)

    def transposed(self, block: torch.Tensor) -> torch.Tensor:
        """``block.t()``, contiguous, in the buffer (valid until the next call)."""
        return self.copy(block.t())


class RunningSmallest:
    """Each row's ``k`` smallest values and their column indices among the blocks offered so far.

    ``values`` (r, k) float32 ascending and ``indices`` (r, k) int64 on the device. Exactly tied
    values may end in any order (``tied`` finds such rows, to be redone on full rows).
    """

    def __init__(self, num_rows: int, k: int, device: str | torch.device):
        self.values = torch.full((num_rows, k), torch.inf, device=device)
        self.indices = torch.full((num_rows, k), -1, dtype=torch.int64, device=device)

    def offer(self, row_start: int, block: torch.Tensor, col_start: int,
              candidates: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge the (b, c) ``block`` of rows ``row_start:`` and columns ``col_start:`` into the lists.

        Returns the block's own ``smallest(block, k)``; pass it back as ``candidates`` to offer the same
        block to another list with the same k without sorting it again.
        """
        values, where = candidates if candidates is not None else smallest(block, self.values.shape[1])
        if block.shape[1] == 0:
            return values, where
        rows = slice(row_start, row_start + block.shape[0])
        merged = torch.cat([self.values[rows], values], dim=1)
        merged_indices = torch.cat([self.indices[rows], where + col_start], dim=1)
        best, pick = smallest(merged, self.values.shape[1])
        self.values[rows], self.indices[rows] = best, torch.gather(merged_indices, 1, pick)
        return values, where

    def tied(self, count: int) -> torch.Tensor:
        """(r,) bool: an exact tie among a row's ``count`` smallest values."""
        head = self.values[:, :count]
        return (head[:, 1:] == head[:, :-1]).any(dim=1)


def full_rows(features: torch.Tensor, rows: torch.Tensor, block_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Full distance rows ``D[rows, :]`` of ``features`` (N, d) for a few chosen ``rows`` (int64).

    Yields ``(row indices (b,), dist (b, N))``; the chosen rows are computed in blocks of at least
    ``MIN_BLOCK_ROWS`` rows (padded with other rows, then dropped) so their values are the ones every
    other path computes.
    """
    total = features.shape[0]
    norms = features.pow(2).sum(dim=1)
    block = block_rows_for(total, block_size)
    for start in range(0, len(rows), block):
        chosen = rows[start:start + block]
        filler = torch.arange(min(MIN_BLOCK_ROWS, total), device=features.device)
        batch = torch.cat([chosen, filler[~torch.isin(filler, chosen)]])[:max(len(chosen), min(MIN_BLOCK_ROWS, total))]
        dist = squared_euclidean(features[batch], features, y_squared_norms=norms)
        yield chosen, dist[:len(chosen)]


def knn(features: ArrayLike, k: int, block_size: int | None = None, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of every feature among all of them (itself included), squared Euclidean.

    features: (N, d) float32. Returns ``(indices (N, k) int64, distances (N, k) float32)``, ascending,
    as ``torch.topk`` orders each full row (rows with exact ties are redone on their full row).
    Half the distance matrix is computed (``symmetric_distance_blocks``); memory O(block^2 + N k).
    """
    z = as_tensor(features, device=device)
    k = min(k, z.shape[0])
    lists = RunningSmallest(z.shape[0], min(k + 1, z.shape[0]), z.device)
    for r0, c0, dist in symmetric_distance_blocks(z, block_size):
        lists.offer(r0, dist, c0)
    values, indices = lists.values[:, :k], lists.indices[:, :k]
    for rows, dist in full_rows(z, torch.nonzero(lists.tied(lists.values.shape[1])).ravel(), block_size):
        values[rows], indices[rows] = smallest(dist, k)
    return indices.cpu().numpy(), values.cpu().numpy()


def stack_features(query_feats: ArrayLike, gallery_feats: ArrayLike,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and move to ``device``: ``(query (m, d), gallery (n, d), all (m + n, d))`` float32."""
    query = as_tensor(query_feats, device=device)
    gallery = as_tensor(gallery_feats, device=device)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected query (m, d) and gallery (n, d) features with the same d, got {tuple(query.shape)} and {tuple(gallery.shape)}")
    if query.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError(f"need at least one query and one gallery feature, got {query.shape[0]} and {gallery.shape[0]}")
    return query, gallery, torch.cat([query, gallery])


def reciprocal_mask(lists: np.ndarray, heads: np.ndarray | None = None, reverse: np.ndarray | None = None) -> np.ndarray:
    """Which neighbours list their owner back: ``mask[i, t] = heads[i] in reverse[lists[i, t]]``.

    lists: (r, k) int neighbour indices (rows of ``reverse``); negative entries are ignored (False).
    heads: (r,) the index each row stands for in ``reverse``'s lists (default ``arange(r)``).
    reverse: (s, k') the neighbour lists of the neighbours (default ``lists`` itself).
    Returns (r, k) bool. Memory O(r k k'), computed in row chunks.
    """
    reverse = lists if reverse is None else reverse
    heads = np.arange(lists.shape[0]) if heads is None else heads
    mask = np.zeros(lists.shape, dtype=bool)
    chunk = max(1, (1 << 24) // max(1, lists.shape[1] * reverse.shape[1]))
    for start in range(0, lists.shape[0], chunk):
        part = lists[start:start + chunk]
        back = reverse[np.maximum(part, 0)]  # (chunk, k, k')
        hit = (back == heads[start:start + chunk, None, None]).any(axis=2)
        mask[start:start + chunk] = hit & (part >= 0)
    return mask


def compact_rows(values: np.ndarray, keep: np.ndarray, fill: int = -1) -> np.ndarray:
    """Move the kept entries of each row to its front, in order, and pad with ``fill``: (r, k) -> (r, k)."""
    order = np.argsort(~keep, axis=1, kind="stable")  # kept first, original order within each group
    out = np.take_along_axis(values, order, axis=1)
    out[~np.take_along_axis(keep, order, axis=1)] = fill
    return out


def overlap_counts(owners: np.ndarray, sets: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``|members[owners[j]] ∩ sets[j]|`` for every pair j (distinct non-negative entries per row).

    owners: (p,) rows of ``members``; sets: (p, a) padded with negatives; members: (r, b) padded with
    negatives. Returns (p,) int64. Memory O(p a b), computed in chunks.
    """
    counts = np.zeros(owners.shape[0], dtype=np.int64)
    chunk = max(1, (1 << 24) // max(1, sets.shape[1] * members.shape[1]))
    for start in range(0, owners.shape[0], chunk):
        part = sets[start:start + chunk]  # (c, a)
        pool = members[owners[start:start + chunk]]  # (c, b)
        same = (part[:, :, None] == pool[:, None, :]) & (part[:, :, None] >= 0)
        counts[start:start + chunk] = same.any(axis=2).sum(axis=1)
    return counts
