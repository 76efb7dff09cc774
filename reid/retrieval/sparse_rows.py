"""Sparse row sets and the sparse operations the re-rankings need: row means (plain, and the
in-place sequential ones), and the sum of element-wise minima between two sets of sparse rows.

Rows are ``scipy.sparse.csr_matrix`` float32 on the CPU (they hold O(N k) entries); the
minimum-overlap join runs in torch on the re-ranking's device because its work grows with
queries x gallery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

TRIPLES_PER_CHUNK = 1 << 22
"""Budget of (query, column, gallery) matches per chunk of ``sum_of_minima`` (~30 bytes each)."""


def sets_to_csr(owners: np.ndarray, members: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary float32 rows: ``out[owners[j], members[j]] = 1`` (duplicates merged; negative members skipped)."""
    keep = members >= 0
    ones = np.ones(int(keep.sum()), dtype=np.float32)
    out = sp.csr_matrix((ones, (owners[keep], members[keep])), shape=shape)
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


def neighbour_mean(rows: sp.csr_matrix, neighbours: np.ndarray) -> sp.csr_matrix:
    """``new[i] = mean of old rows neighbours[i, :]`` (all from the old rows, not in place); float32 csr.

    rows: (r, c) csr; neighbours: (s, k) int indices of rows. Returns (s, c).
    """
    owners = np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1])
    links = sp.csr_matrix((np.ones(owners.shape[0], np.float32), (owners, neighbours.ravel())), shape=(neighbours.shape[0], rows.shape[0]))
    out = sp.csr_matrix(links @ rows, dtype=np.float32)
    out.data /= np.float32(neighbours.shape[1])
    return out


def dependency_levels(neighbours: np.ndarray) -> np.ndarray:
    """Level of each row in the in-place recurrence of ``sequential_row_means``.

    Row i depends on the *updated* rows j < i it lists; level(i) = 0 without such rows, else
    1 + max level(j). Rows of one level only depend on earlier levels, so a level is one batch.
    neighbours: (r, k) int. Returns (r,) int64; iterations = longest chain + 1.
    """
    rows = np.arange(neighbours.shape[0])[:, None]
    earlier = neighbours < rows  # (r, k): references an already-updated row
    safe = np.where(earlier, neighbours, 0)
    level = np.zeros(neighbours.shape[0], dtype=np.int64)
    while True:
        candidate = np.where(earlier, level[safe] + 1, 0).max(axis=1, initial=0)
        if np.array_equal(candidate, level):
            return level
        level = candidate


def sequential_row_means(rows: sp.csr_matrix, neighbours: np.ndarray, extra: sp.csr_matrix | None = None) -> sp.csr_matrix:
    """The in-place, sequential row averaging of the hard-weight re-ranking, batched by dependency level.

    For i = 0, 1, ... in order: ``rows[i] = sum_t source(neighbours[i, t]) / k``, where ``source(j)``
    is the already-updated ``rows[j]`` for j < i, the original ``rows[j]`` for i <= j < r, and
    ``extra[j - r]`` for j >= r. The result equals that loop (up to float32 summation order: ~1e-7)
    but touches each row once: rows whose updated inputs are all known form one batch (a level).

    rows: (r, c) float32 csr; neighbours: (r, k) int, values in [0, r + len(extra)); extra: (s, c) csr.
    Returns the updated (r, c) float32 csr.
    """
    r, k = neighbours.shape
    owners = np.repeat(np.arange(r), k)
    targets = neighbours.ravel()
    earlier = targets < owners
    source = rows if extra is None else sp.vstack([rows, extra], format="csr")
    fixed_links = sp.csr_matrix((np.ones(int((~earlier).sum()), np.float32), (owners[~earlier], targets[~earlier])), shape=(r, source.shape[0]))
    fixed = (fixed_links @ source).tocsr()  # (r, c): the part that never changes

    level = dependency_levels(neighbours)
    order = np.argsort(level, kind="stable")  # rows in batch order
    bounds = np.searchsorted(level[order], np.arange(level.max() + 2))
    position = np.empty(r, dtype=np.int64)
    position[order] = np.arange(r)
    # links to updated rows, with columns renumbered to batch order
    updated_links = sp.csr_matrix((np.ones(int(earlier.sum()), np.float32), (owners[earlier], position[targets[earlier]])), shape=(r, r))

    spans = list(zip(bounds[:-1], bounds[1:]))
    batches: list[sp.csr_matrix] = []
    for lo, hi in spans:
        members = order[lo:hi]
        batch = fixed[members]
        links = updated_links[members]
        for (a, b), earlier_batch in zip(spans, batches):  # earlier levels, one product each (no re-stacking)
            part = links[:, a:b]
            if part.nnz:
                batch = batch + part @ earlier_batch
        batch = sp.csr_matrix(batch, dtype=np.float32)
        batch.data /= np.float32(k)
        batches.append(batch)
    return sp.vstack(batches, format="csr")[position]


@dataclass
class TorchCsr:
    """A csr matrix as three torch tensors on a device: indptr (r + 1,) int64, indices (nnz,) int32
    (int64 past 2^31 columns), values (nnz,) float32."""

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix, device: str | torch.device) -> TorchCsr:
        m = sp.csr_matrix(matrix)
        m.sort_indices()
        as_t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)  # noqa: E731
        index_type = torch.int32 if m.shape[1] < 2**31 else torch.int64
        return cls(as_t(m.indptr, torch.int64), as_t(m.indices, index_type), as_t(m.data, torch.float32), m.shape)


def sum_of_minima(left: TorchCsr, start: int, stop: int, right_by_column: TorchCsr) -> torch.Tensor:
    """``out[i, g] = sum_h min(left[start + i, h], right[g, h])`` for nonnegative sparse rows.

    left: (r, c) rows; right_by_column: the right rows (s, c) transposed, i.e. a (c, s) csr whose row h
    lists the right rows g with a nonzero in column h. Only the (i, h, g) with both entries nonzero
    are visited (the inverted-index trick of the published code), in chunks of ``TRIPLES_PER_CHUNK``.
    Returns (stop - start, s) float32 on the device.
    """
    device = left.values.device
    num_right = right_by_column.shape[1]
    out = torch.zeros((stop - start, num_right), dtype=torch.float32, device=device)
    column_sizes = right_by_column.indptr.diff()  # (c,)
    lo_nnz, hi_nnz = int(left.indptr[start]), int(left.indptr[stop])
    columns = left.indices[lo_nnz:hi_nnz]
    owners = torch.repeat_interleave(torch.arange(stop - start, device=device), left.indptr[start:stop + 1].diff())
    work = torch.cumsum(column_sizes[columns], 0)  # triples up to each left entry
    total = int(work[-1]) if len(work) else 0
    marks = torch.arange(1, total // TRIPLES_PER_CHUNK + 1, device=device) * TRIPLES_PER_CHUNK
    edges = [0, *torch.searchsorted(work, marks).tolist(), len(columns)]
    # per left entry: where its column's run starts in the right arrays, relative to its first triple
    first_triple = work - column_sizes[columns]
    small = max((stop - start) * num_right, len(right_by_column.values), total) < 2**31
    index_type = torch.int32 if small else torch.int64  # half the memory traffic when it fits
    shift = (right_by_column.indptr[columns] - first_triple).to(index_type)
    row_base = (owners * num_right).to(index_type)
    right_rows = right_by_column.indices.to(index_type)
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        sizes = column_sizes[columns[a:b]]
        count = int(work[b - 1] - first_triple[a])
        where = torch.arange(int(first_triple[a]), int(first_triple[a]) + count, device=device, dtype=index_type)
        where += torch.repeat_interleave(shift[a:b], sizes, output_size=count)  # right entry of each triple
        minima = torch.minimum(torch.repeat_interleave(left.values[lo_nnz + a:lo_nnz + b], sizes, output_size=count), right_by_column.values[where])
        target = torch.repeat_interleave(row_base[a:b], sizes, output_size=count) + right_rows[where]
        out.view(-1).index_add_(0, target, minima)
    return out
