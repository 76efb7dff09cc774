"""Blockwise nearest-neighbour search and reciprocal-neighbour masks, never holding an N x N matrix.

The re-rankings in ``reid.rerank`` only look at each image's few nearest neighbours, plus a few
whole-row quantities (a row maximum, a row L2 norm). This module computes both by walking the rows
of a feature set in blocks: one ``(block, num_cols)`` float32 distance block at a time, computed with
``reid.distance.squared_euclidean`` (torch matmul, CPU or CUDA), reduced to ``topk`` indices and
row statistics, then dropped.

Bit-exactness with the dense path: BLAS (MKL/OpenBLAS on the CPU) computes each entry of a matmul
with the same arithmetic whatever the number of rows in the call, *except* for very thin calls
(fewer than ~16 rows take a matrix-vector path with another summation order). ``row_blocks`` therefore
never yields a thin block: the last block is shifted back to overlap the previous one. With that, the
distance rows here are bit-identical to the rows of the dense matrices on the CPU (checked in the
tests), so neighbour lists, including the order that ``torch.topk`` gives exact ties, equal those of
the dense code. On CUDA, cuBLAS may pick shape-dependent kernels: distances then agree to ~1e-7.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from reid.distance import as_tensor, squared_euclidean

ArrayLike = np.ndarray | torch.Tensor

BLOCK_ELEMENTS = 1 << 24
"""Default distance-block budget: 16 Mi float32 entries (64 MiB) per block."""

MIN_BLOCK_ROWS = 64
"""Blocks are never thinner than this (see the module docstring: thin matmuls round differently)."""


def block_rows_for(num_cols: int, block_size: int | None = None) -> int:
    """Rows per distance block: ``block_size`` if given, else what fits ``BLOCK_ELEMENTS`` (>= 64)."""
    if block_size is not None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        return block_size
    return max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // max(num_cols, 1))


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

    ``torch.topk(largest=False, sorted=True)``, as the dense code: exact ties keep torch's order.
    """
    return torch.topk(values, min(k, values.shape[1]), dim=1, largest=False, sorted=True)


def knn(rows: ArrayLike, cols: ArrayLike, k: int, block_size: int | None = None, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``cols`` of each of ``rows`` by squared Euclidean distance, blockwise.

    rows: (r, d), cols: (c, d) float32 features. Returns ``(indices (r, k) int64, distances (r, k)
    float32)``, ascending per row; memory O(block x c) beyond the inputs and outputs.
    """
    row_t, col_t = as_tensor(rows, device=device), as_tensor(cols, device=device)
    k = min(k, col_t.shape[0])
    indices, distances = np.empty((row_t.shape[0], k), dtype=np.int64), np.empty((row_t.shape[0], k), dtype=np.float32)
    for keep, dist in distance_blocks(row_t, col_t, block_size):
        values, where = smallest(dist, k)
        indices[keep:keep + len(dist)], distances[keep:keep + len(dist)] = where.cpu().numpy(), values.cpu().numpy()
    return indices, distances


def stack_features(query_feats: ArrayLike, gallery_feats: ArrayLike, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
