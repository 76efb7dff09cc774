"""Both k-reciprocal re-rankings from features, in O(N k) memory: no N x N matrix anywhere.

The dense definitions (``reid.rerank.classic`` / ``hard_weight``; ``../shared/reference/README.md``
R1 and R2) build several (N, N) matrices, N = queries + gallery, but only use each image's first
k1 (+1) neighbours, a few whole-row quantities and sparse set weights. Here:

1. one blockwise pass over the rows of all N features (``reid.neighbors``) keeps the neighbour lists
   and the exact whole-row quantities, one (block, N) distance block at a time;
2. reciprocal sets, expansions and query expansion are sparse (``scipy.sparse``, O(N k) entries);
3. the Jaccard distance is computed for the query x gallery pairs only, one block of queries at a
   time, with the inverted-index join of ``reid.sparse_rows.sum_of_minima``; the output block is
   combined with that block's raw distances and written out (full matrix) or cut to its ``topk``.

Results equal the dense functions within the reference tolerance (1e-5; summation order differs,
~1e-7): the distance rows are bit-identical to the dense code's on the CPU (see ``reid.neighbors``),
so are the neighbour lists. Exact ties (duplicate images): classic re-sorts an affected row with
numpy's default ``argsort``, the order of the dense and published code; hard-weight takes
``torch.topk`` of the same rows as the dense code, hence the same order. On CUDA, distances may
differ from the CPU's by ~1e-7, so a near-tie at a list boundary can fall the other way there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from reid.neighbors import (
    ArrayLike,
    RunningSmallest,
    block_rows_for,
    compact_rows,
    distance_blocks,
    full_rows,
    overlap_counts,
    reciprocal_mask,
    smallest,
    stack_features,
    symmetric_distance_blocks,
)
from reid.sparse_rows import TorchCsr, sequential_row_means, sets_to_csr, sum_of_minima

RerankOutput = np.ndarray | tuple[np.ndarray, np.ndarray]


def classic_from_features(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    topk: int | None = None,
    device: str | torch.device = "cpu",
    *,
    block_size: int | None = None,
) -> RerankOutput:
    """Classic k-reciprocal re-ranking (reference R1) from features, without an N x N matrix.

    query_feats: (m, d), gallery_feats: (n, d) L2-normalised float32 (numpy or torch).
    Returns the (m, n) float32 re-ranked distance when ``topk`` is None, else ``(indices, distances)``
    (m, topk) int64 / float32: each query's topk best gallery items, ascending.
    device: where the distance blocks and the Jaccard join run ("cpu" or "cuda").
    block_size: rows per distance block (default: 64 MiB blocks; results do not depend on it).
    How each dense quantity is obtained: ``classic_blocks``.
    """
    _check_arguments(k1, k2, topk, gallery_feats)
    blocks = classic_blocks(query_feats, gallery_feats, k1, k2, lambda_value, device, block_size=block_size)
    return collect_blocks(blocks, len(query_feats), len(gallery_feats), topk)


def classic_blocks(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    device: str | torch.device = "cpu",
    *,
    block_size: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Classic re-ranking (R1) as a stream of query blocks: ``(start, (b, n) float32 tensor)``.

    Does the neighbour pass and the sparse steps now, then yields consecutive row blocks of the
    (m, n) re-ranked matrix on ``device`` (so a caller can score or cut each block without ever
    holding m x n).

    query_feats: (m, d), gallery_feats: (n, d) L2-normalised float32 (numpy or torch). The distance
    is the squared Euclidean one of ``reid.distance.squared_euclidean`` (what ``reid.rerank.classic``
    receives as ``dist_qg/dist_qq/dist_gg``); as in R1 it is squared again (|x - y|^4) and each row
    of that is divided by its maximum. That row maximum, a whole-row quantity, is taken exactly in
    the neighbour pass: each (block, N) block of squared-squared distances holds full rows, reduced
    to their max and their nearest entries (the dense O rows, since the stacked distance matrix is
    symmetric bit for bit). Exact ties of O among a row's first k1 + 2 (duplicate images) are
    ordered as the dense code orders them: that row alone is sorted with numpy's ``argsort``.
    Weights of expansion members outside a row's list use the same formula from a direct dot
    product (~1e-7 from the dense value).
    """
    query, gallery, both = stack_features(query_feats, gallery_feats, device)
    m, total = query.shape[0], both.shape[0]
    # 1. neighbour pass: each row's k1 + 2 nearest by O (one more than R1 uses, to see a tie at the
    # end of the list), their D^2 (most weights of step 4 are looked up there), and the row maxima
    nearest, nearest_fourth, row_max = _classic_neighbours(both, min(k1 + 2, total), k1 + 2, block_size)
    forward = nearest[:, :k1 + 1]

    # 2. k-reciprocal sets (forward order) and the half-size sets of every candidate
    reciprocal = compact_rows(forward, reciprocal_mask(forward))  # (N, k1+1), -1 padded
    half_forward = forward[:, :int(np.around(k1 / 2.0)) + 1]
    half = compact_rows(half_forward, reciprocal_mask(half_forward))  # (N, half+1)

    # 3. expansion: add half(c) for each c in R(i) with |half(c) ∩ R(i)| > 2/3 |half(c)|
    owners, slots = np.nonzero(reciprocal >= 0)
    candidates = reciprocal[owners, slots]
    common = overlap_counts(owners, half[candidates], reciprocal)
    half_sizes = (half >= 0).sum(axis=1)[candidates]
    grows = common > 2.0 / 3 * half_sizes
    grown_owners = np.repeat(owners[grows], half.shape[1])
    expanded = sets_to_csr(np.concatenate([owners, grown_owners]), np.concatenate([candidates, half[candidates[grows]].ravel()]), (total, total))

    # 4. V: softmax of -O over each expanded set, then the mean over the k2 nearest rows
    weights = _set_weights(expanded, nearest, nearest_fourth, both, row_max)
    if k2 != 1:
        weights = neighbour_mean(weights, forward[:, :k2])

    # 5. per query block: Jaccard against the gallery rows, combined with the query's O row
    query_rows = TorchCsr.from_scipy(weights[:m], both.device)
    gallery_by_column = TorchCsr.from_scipy(weights[m:].T.tocsr(), both.device)

    def finish(start: int, stop: int, dist_qg: torch.Tensor) -> torch.Tensor:
        # in-place arithmetic (the blocks are large); each step rounds as the dense expression
        shared = sum_of_minima(query_rows, start, stop, gallery_by_column)  # (b, n)
        jaccard = shared.div_(torch.rsub(shared, 2)).neg_().add_(1)  # 1 - s / (2 - s)
        original = dist_qg.mul_(dist_qg).div_(row_max[start:stop, None])  # O = D^2 / row max
        return jaccard.mul_(lambda_value).add_(original.mul_(1 - lambda_value))

    return _final_blocks(query, gallery, finish, block_size)


def hard_weight_from_features(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.7,
    expansion_threshold: float = 2 / 3,
    topk: int | None = None,
    device: str | torch.device = "cpu",
    *,
    block_size: int | None = None,
) -> RerankOutput:
    """The paper's hard-weight re-ranking (reference R2) from features, without an N x N matrix.

    Inputs, outputs, device and block_size as ``classic_from_features``; how each step and dense
    quantity is obtained: ``hard_weight_blocks``.
    """
    _check_arguments(k1, k2, topk, gallery_feats)
    blocks = hard_weight_blocks(query_feats, gallery_feats, k1, k2, lambda_value, expansion_threshold, device, block_size=block_size)
    return collect_blocks(blocks, len(query_feats), len(gallery_feats), topk)


def hard_weight_blocks(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.7,
    expansion_threshold: float = 2 / 3,
    device: str | torch.device = "cpu",
    *,
    block_size: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Hard-weight re-ranking (R2) as a stream of query blocks: ``(start, (b, n) float32 tensor)``.

    query_feats: (m, d), gallery_feats: (n, d) L2-normalised float32; distance = squared Euclidean
    (``reid.distance.squared_euclidean``), not squared again, not normalised. Reproduces every
    quirk of R2: k1 (not k1 + 1) neighbours, floor(k1 / 2) half sets, the non-strict threshold, the
    list-aliasing walk of the query expansion (only the first merge extends the walk, so the walk
    visits R(p) then the half set of the first merging item: evaluated as two vectorised rounds),
    and the in-place sequential query and gallery expansions (``sequential_row_means``: batched by
    dependency level, same order of dependence as the loop).
    The whole-row quantity, the L2 norm of each row of the raw query x gallery distance (the ``Nrm``
    term), is exact: each block holds full rows of that matrix and is normalised with
    ``F.normalize`` as the dense code does. Sets are built now; the blocks are yielded as in
    ``classic_blocks``.
    """
    query, gallery, both = stack_features(query_feats, gallery_feats, device)
    m, n = query.shape[0], gallery.shape[0]
    # 1. neighbour pass on the stacked distance: k1 nearest over all images, and over the gallery
    near_all, near_gallery = _hard_weight_neighbours(both, m, k1, block_size)
    near_query, near_gallery = near_all[:m], near_gallery[m:]

    # 2. reciprocal sets: R(p) gallery members of a query's list that list p back; R(g), H(g)
    query_mask = reciprocal_mask(near_query, reverse=near_all) & (near_query >= m)
    query_sets = compact_rows(np.where(query_mask, near_query - m, -1), query_mask)  # (m, k1) gallery ids
    gallery_sets = compact_rows(near_gallery, reciprocal_mask(near_gallery))  # (n, k1)
    half_lists = near_gallery[:, :k1 // 2]
    half = compact_rows(half_lists, reciprocal_mask(half_lists))  # (n, k1 // 2)
    half_sizes = (half >= 0).sum(axis=1)

    # 3. expansions (sets only), then the binary rows Q (m, n) and G (n, n)
    query_rows = _expand_queries(query_sets, half, half_sizes, expansion_threshold, n)
    gallery_rows = _expand_gallery(gallery_sets, half, half_sizes, expansion_threshold)

    # 4. local query expansion and gallery expansion: in place, sequential, as R2 steps 7 and 8
    query_rows = sequential_row_means(query_rows, near_query[:, :k2], extra=gallery_rows)
    gallery_rows = sequential_row_means(gallery_rows, near_gallery[:, 1:k2 + 1])

    # 5. per query block: Jaccard (min / max sums) and the row-normalised raw distance
    left = TorchCsr.from_scipy(query_rows, both.device)
    right_by_column = TorchCsr.from_scipy(gallery_rows.T.tocsr(), both.device)
    left_sums, right_sums = (torch.from_numpy(np.asarray(rows.sum(axis=1), dtype=np.float32).ravel()).to(both.device)
                             for rows in (query_rows, gallery_rows))
    del query_rows, gallery_rows

    def finish(start: int, stop: int, dist_qg: torch.Tensor) -> torch.Tensor:
        # in-place arithmetic (the blocks are large); sum max = sum q + sum g - sum min
        shared = sum_of_minima(left, start, stop, right_by_column)  # (b, n)
        union = (left_sums[start:stop, None] + right_sums[None, :]).sub_(shared)
        jaccard = shared.div_(union).neg_().add_(1)  # 1 - min / max
        return F.normalize(dist_qg, p=2, dim=1).mul_(1 - lambda_value).add_(jaccard.mul_(lambda_value))

    return _final_blocks(query, gallery, finish, block_size)


def _classic_neighbours(features: torch.Tensor, width: int, checked: int, block_size: int | None) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """R1's ranking, blockwise: each row's ``width`` first entries by O = D^2 / (row max of D^2).

    features: (N, d) on the device. Returns ``(nearest (N, width) int64, their D^2 (N, width) float32,
    row max of D^2 (N,) float32 tensor)``. Ranked by D^2 over half the matrix (``reid.neighbors``),
    the same order as O where O has no ties; a row whose first ``checked`` O values contain an exact
    tie is redone on its full O row with numpy's default ``argsort``, the dense code's order.
    """
    total = features.shape[0]
    lists = RunningSmallest(total, width, features.device)
    row_max = torch.zeros(total, dtype=torch.float32, device=features.device)
    for r0, c0, dist in symmetric_distance_blocks(features, block_size):
        fourth = dist.mul_(dist)  # (b, c): R1 squares the (already squared) distance matrix
        rows = slice(r0, r0 + len(fourth))
        row_max[rows] = torch.maximum(row_max[rows], fourth.amax(dim=1))
        lists.offer(r0, fourth, c0)
    ranked_o = lists.values[:, :checked] / row_max[:, None]
    tied = torch.nonzero((ranked_o[:, 1:] == ranked_o[:, :-1]).any(dim=1)).ravel()
    for rows, dist in full_rows(features, tied, block_size):
        fourth = dist.mul_(dist)
        order = torch.from_numpy(np.argsort((fourth / row_max[rows, None]).cpu().numpy(), axis=1)[:, :width]).to(features.device)
        lists.indices[rows], lists.values[rows] = order, torch.gather(fourth, 1, order)
    return lists.indices.cpu().numpy(), lists.values.cpu().numpy(), row_max


def _hard_weight_neighbours(features: torch.Tensor, num_query: int, k1: int, block_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """R2's lists on the stacked distance D (N, N): each row's k1 nearest over all N, and over the gallery.

    Returns ``(near_all (N, k1) int64 in [0, N), near_gallery (N, k1) int64 gallery indices)`` ascending,
    as ``torch.topk`` of the full rows orders them (rows with an exact tie are redone on full rows).
    """
    total, m = features.shape[0], num_query
    everything = RunningSmallest(total, min(k1 + 1, total), features.device)
    gallery = RunningSmallest(total, min(k1 + 1, total - m), features.device)
    same_width = everything.values.shape[1] == gallery.values.shape[1]
    for r0, c0, dist in symmetric_distance_blocks(features, block_size):
        candidates = everything.offer(r0, dist, c0)
        if c0 >= m and same_width:  # gallery columns only: the same candidates
            gallery.offer(r0, dist, c0, candidates)
        else:
            skip = max(0, m - c0)  # query columns of this block
            gallery.offer(r0, dist[:, skip:], c0 + skip)
    near_all, near_gallery = everything.indices[:, :k1], gallery.indices[:, :k1] - m
    is_gallery = torch.arange(total, device=features.device) >= m
    tied = everything.tied(everything.values.shape[1]) | (gallery.tied(gallery.values.shape[1]) & is_gallery)
    for rows, dist in full_rows(features, torch.nonzero(tied).ravel(), block_size):
        near_all[rows], near_gallery[rows] = smallest(dist, k1)[1], smallest(dist[:, m:], k1)[1]
    return near_all.cpu().numpy(), near_gallery.cpu().numpy()


def _set_weights(members: sp.csr_matrix, nearest: np.ndarray, nearest_fourth: np.ndarray, features: torch.Tensor, row_max: torch.Tensor) -> sp.csr_matrix:
    """R1 step 4's V: ``exp(-O[i, e]) / sum_e exp(-O[i, e])`` over each row's set (float32 csr).

    O[i, e] = D(i, e)^2 / row_max[i]. Most members (~98 % on clustered features) are in row i's
    ``nearest`` list (r, L), whose D^2 ``nearest_fourth`` came from the neighbour pass (bit-identical
    to the dense value); the others are computed here with the same norms-plus-product formula but a
    plain row dot (~1e-7 from the dense value).
    """
    members.sort_indices()
    total = members.shape[0]
    owners = np.repeat(np.arange(total), np.diff(members.indptr))
    targets = members.indices.astype(np.int64)
    wanted = owners * total + targets
    known = (np.arange(total)[:, None] * total + nearest).ravel()
    order = np.argsort(known)
    at = np.minimum(np.searchsorted(known[order], wanted), len(known) - 1)
    found = known[order][at] == wanted
    fourth = nearest_fourth.ravel()[order][at]
    missing = np.nonzero(~found)[0]
    if len(missing):
        norms = features.pow(2).sum(dim=1)  # (N,)
        step = max(1, (1 << 24) // features.shape[1])  # bounds the gathered rows to 64 MiB
        for lo in range(0, len(missing), step):
            part = missing[lo:lo + step]
            i = torch.from_numpy(owners[part]).to(features.device)
            e = torch.from_numpy(targets[part]).to(features.device)
            dist = norms[i] + norms[e] - 2 * (features[i] * features[e]).sum(dim=1)
            fourth[part] = (dist * dist).cpu().numpy()
    scores = np.exp(-(fourth / row_max.cpu().numpy()[owners]))
    totals = np.add.reduceat(scores, members.indptr[:-1]) if len(scores) else np.zeros(0, np.float32)
    totals = np.where(np.diff(members.indptr) == 0, 1, totals).astype(np.float32)
    return sp.csr_matrix((scores / np.repeat(totals, np.diff(members.indptr)), members.indices, members.indptr), shape=members.shape, dtype=np.float32)


def neighbour_mean(rows: sp.csr_matrix, neighbours: np.ndarray) -> sp.csr_matrix:
    """R1 step 5: ``new[i] = mean of old rows neighbours[i, :]`` (from the old rows, not in place)."""
    owners = np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1])
    links = sp.csr_matrix((np.ones(owners.shape[0], np.float32), (owners, neighbours.ravel())), shape=(neighbours.shape[0], rows.shape[0]))
    out = sp.csr_matrix(links @ rows, dtype=np.float32)
    out.data /= np.float32(neighbours.shape[1])
    return out


def _expand_queries(sets: np.ndarray, half: np.ndarray, half_sizes: np.ndarray, threshold: float, num_gallery: int) -> sp.csr_matrix:
    """R2 step 4 for all queries at once: R*(p) as binary (m, n) rows.

    The test for item g only depends on the fixed P0 = R(p) and on H(g), not on the walk state, so
    the walk reduces to: visit R(p) in order; if some g passes, the first one's H(g) is also
    visited (the list-aliasing quirk); R*(p) = R(p) ∪ H(g) over every visited g that passes.
    """
    owners, slots = np.nonzero(sets >= 0)  # row-major: each query's R(p) in walk order
    visited = sets[owners, slots]
    passes = overlap_counts(owners, half[visited], sets) >= half_sizes[visited] * threshold
    first = np.full(sets.shape[0], -1)
    first_owner, first_at = np.unique(owners[passes], return_index=True)
    first[first_owner] = visited[passes][first_at]
    # the aliased extension of the walk: H(first merged item)
    extra_owners = np.repeat(np.nonzero(first >= 0)[0], half.shape[1])
    extra_items = half[first[first >= 0]].ravel()
    real = extra_items >= 0
    extra_owners, extra_items = extra_owners[real], extra_items[real]
    extra_passes = overlap_counts(extra_owners, half[extra_items], sets) >= half_sizes[extra_items] * threshold
    merged = np.concatenate([visited[passes], extra_items[extra_passes]])
    merged_owners = np.concatenate([owners[passes], extra_owners[extra_passes]])
    members = np.concatenate([visited, half[merged].ravel()])
    member_owners = np.concatenate([owners, np.repeat(merged_owners, half.shape[1])])
    return sets_to_csr(member_owners, members, (sets.shape[0], num_gallery))


def _expand_gallery(sets: np.ndarray, half: np.ndarray, half_sizes: np.ndarray, threshold: float) -> sp.csr_matrix:
    """R2 step 5: for h in A = R(g) without its first item, merge H(h) if |A ∩ H(h)| >= thr |H(h)|."""
    others = sets[:, 1:]  # A, padded with -1
    owners, slots = np.nonzero(others >= 0)
    items = others[owners, slots]
    passes = overlap_counts(owners, half[items], others) >= half_sizes[items] * threshold
    all_owners, all_slots = np.nonzero(sets >= 0)
    members = np.concatenate([sets[all_owners, all_slots], half[items[passes]].ravel()])
    member_owners = np.concatenate([all_owners, np.repeat(owners[passes], half.shape[1])])
    return sets_to_csr(member_owners, members, (sets.shape[0], sets.shape[0]))


def collect_blocks(blocks: Iterable[tuple[int, torch.Tensor]], num_query: int, num_gallery: int, topk: int | None = None) -> RerankOutput:
    """Gather ``(start, (b, n) block)`` rows into the (m, n) float32 matrix, or keep each row's ``topk``.

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


def _final_blocks(query: torch.Tensor, gallery: torch.Tensor, finish: Callable[[int, int, torch.Tensor], torch.Tensor],
                  block_size: int | None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, finish(start, stop, raw query x gallery distance block))`` over query blocks."""
    for start, dist_qg in distance_blocks(query, gallery, block_rows_for(gallery.shape[0], block_size)):
        yield start, finish(start, start + len(dist_qg), dist_qg)


def _check_arguments(k1: int, k2: int, topk: int | None, gallery_feats: ArrayLike) -> None:
    if k1 < 2 or not 1 <= k2 <= k1:
        raise ValueError(f"need k1 >= 2 and 1 <= k2 <= k1, got k1={k1}, k2={k2}")
    if topk is not None and not 1 <= topk <= len(gallery_feats):
        raise ValueError(f"topk must be in [1, {len(gallery_feats)}] (the gallery size), got {topk}")
