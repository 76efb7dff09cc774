"""Where the re-rankings' distances come from: features, blockwise, or three given dense matrices.

Both re-ranking engines (``reid.retrieval.classic``, ``reid.retrieval.hard_weight``) read one (N, N)
distance W between the stacked images [queries; gallery] (N = m + n), through four questions that a
source answers:

- ``tiles()``: W once, as blocks ``(row_start, col_start, (b, c) block)`` (the caller may modify each
  one until it asks for the next);
- ``rows(indices)``: a few whole rows of W, ``(indices (b,), (b, N) rows)`` (the caller may modify them);
- ``entries(rows, cols)``: single entries ``W[rows[j], cols[j]]``;
- ``query_gallery_blocks()``: ``W[:m, m:]`` in consecutive query blocks ``(start, (b, n) block)``
  (the caller may modify them).

``FeatureDistances``: W is the squared Euclidean distance of the stacked features, computed in blocks
and dropped (only the blocks on and above the diagonal are multiplied: W is symmetric bit for bit on
the CPU), so memory is O(block + N d) whatever N. ``MatrixDistances``: W is read from the three
matrices the published classic re-ranking takes, the way it reads them: it normalises the columns of
[[qq, qg], [qg^T, gg]] and transposes, so row i of W is column i of that block matrix (the same as row
i when the matrices are symmetric, as distance matrices are). All tensors stay on the inputs' device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from reid.retrieval.arrays import ArrayLike, as_tensor
from reid.retrieval.neighbors import Scratch, block_rows_for, distance_blocks, full_rows, stack_features, symmetric_distance_blocks

Block = tuple[int, torch.Tensor]

ENTRY_BUDGET = 1 << 24
"""Feature values gathered at once by ``FeatureDistances.entries`` (64 MiB of float32)."""


class Distances(Protocol):
    """What an engine asks of a source (see the module docstring); shapes as there."""

    num_query: int  # m
    size: int  # N = m + n
    device: torch.device

    def tiles(self) -> Iterator[tuple[int, int, torch.Tensor]]: ...

    def rows(self, indices: torch.Tensor) -> Iterator[Block]: ...

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor: ...

    def query_gallery_blocks(self) -> Iterator[Block]: ...


class FeatureDistances:
    """W = squared Euclidean distance (``reid.retrieval.distance.squared_euclidean``) of [queries; gallery] features.

    query_feats: (m, d), gallery_feats: (n, d) float32, L2-normalised (numpy or torch), moved to
    ``device``. block_size: rows (and tile side) of the distance blocks; None = 64 MiB blocks.
    Results do not depend on it: blocks are never thin, so every entry has the dense matmul's value.
    """

    def __init__(self, query_feats: ArrayLike, gallery_feats: ArrayLike, device: str | torch.device = "cpu",
                 block_size: int | None = None):
        self.query, self.gallery, self.features = stack_features(query_feats, gallery_feats, device)
        self.num_query, self.size = self.query.shape[0], self.features.shape[0]
        self.device = self.features.device
        self.block_size = block_size
        block_rows_for(self.size, block_size)  # checks block_size now, not at the first block
        self._norms: torch.Tensor | None = None

    def tiles(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        return symmetric_distance_blocks(self.features, self.block_size)

    def rows(self, indices: torch.Tensor) -> Iterator[Block]:
        return full_rows(self.features, indices, self.block_size)

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(p,) float32 ``W[rows, cols]`` from a row dot product (~1e-7 from the matmul's value)."""
        if self._norms is None:
            self._norms = self.features.pow(2).sum(dim=1)  # (N,)
        out = torch.empty(rows.shape, dtype=torch.float32, device=self.device)
        step = max(1, ENTRY_BUDGET // self.features.shape[1])
        for start in range(0, len(rows), step):
            r, c = rows[start:start + step], cols[start:start + step]
            out[start:start + step] = self._norms[r] + self._norms[c] - 2 * (self.features[r] * self.features[c]).sum(dim=1)
        return out

    def query_gallery_blocks(self) -> Iterator[Block]:
        return distance_blocks(self.query, self.gallery, self.block_size)


class MatrixDistances:
    """W read from given distances as the published classic re-ranking reads them (row i = column i).

    dist_qg: (m, n), dist_qq: (m, m), dist_gg: (n, n) float32 (numpy or torch; everything runs where
    ``dist_qg`` is). Query row i of W is ``[qq[:, i] | qg[i]]``, gallery row j is ``[qg[:, j] | gg[:, j]]``.
    block_size: rows per tile; None = 64 MiB tiles.
    """

    def __init__(self, dist_qg: ArrayLike, dist_qq: ArrayLike, dist_gg: ArrayLike, block_size: int | None = None):
        self.qg = as_tensor(dist_qg)
        self.device = self.qg.device
        self.qq, self.gg = as_tensor(dist_qq, device=self.device), as_tensor(dist_gg, device=self.device)
        m, n = self.qg.shape
        if self.qq.shape != (m, m) or self.gg.shape != (n, n):
            raise ValueError(f"expected dist_qg (m, n), dist_qq (m, m), dist_gg (n, n); got {tuple(self.qg.shape)}, "
                             f"{tuple(self.qq.shape)}, {tuple(self.gg.shape)}")
        if m == 0 or n == 0:
            raise ValueError(f"need at least one query and one gallery image, got {m} and {n}")
        self.num_query, self.size = m, m + n
        self.block_size = block_size
        self.block = block_rows_for(self.size, block_size)

    def tiles(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        # Columns of the block matrix are rows of W: a block of its rows, transposed, is a tile of W
        # with every row (transposing whole rows is several times faster than a column slice).
        m, scratch = self.num_query, Scratch()
        for matrix, row_start, col_start in ((self.qq, 0, 0), (self.qg, m, 0), (self.gg, m, m)):
            rows = block_rows_for(matrix.shape[1], self.block_size)
            for start in range(0, matrix.shape[0], rows):
                yield row_start, col_start + start, scratch.transposed(matrix[start:start + rows])  # (width, b)
        for start in range(0, m, self.block):
            yield start, m, scratch.copy(self.qg[start:start + self.block])  # (b, n): query rows, gallery columns

    def rows(self, indices: torch.Tensor) -> Iterator[Block]:
        m = self.num_query
        for start in range(0, len(indices), self.block):
            chosen = indices[start:start + self.block].to(self.device)
            out = torch.empty((len(chosen), self.size), dtype=torch.float32, device=self.device)
            query, gallery = chosen < m, chosen >= m
            out[query] = torch.cat([self.qq[:, chosen[query]].t(), self.qg[chosen[query]]], dim=1)
            out[gallery] = torch.cat([self.qg[:, chosen[gallery] - m].t(), self.gg[:, chosen[gallery] - m].t()], dim=1)
            yield chosen, out

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(p,) float32 ``W[rows, cols]`` = block matrix entry ``[cols, rows]``, exactly."""
        m = self.num_query
        rows, cols = rows.to(self.device), cols.to(self.device)
        out = torch.empty(rows.shape, dtype=torch.float32, device=self.device)
        for row_query in (True, False):
            for col_query in (True, False):
                pick = ((rows < m) == row_query) & ((cols < m) == col_query)
                r, c = rows[pick], cols[pick]
                if row_query and col_query:
                    out[pick] = self.qq[c, r]
                elif row_query:
                    out[pick] = self.qg[r, c - m]
                elif col_query:
                    out[pick] = self.qg[c, r - m]
                else:
                    out[pick] = self.gg[c - m, r - m]
        return out

    def query_gallery_blocks(self) -> Iterator[Block]:
        for start in range(0, self.num_query, self.block):
            yield start, self.qg[start:start + self.block].clone()
