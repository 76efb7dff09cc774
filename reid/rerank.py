"""k-reciprocal re-ranking, in the two variants of the published implementation, fast and exact.

``classic``: Zhong et al. 2017 as CLIP-ReIdent's ``re_ranking`` computes it (reference README "R1").
``hard_weight``: the 2023 paper's post-processing ``postprocess_distance`` ("R2").

Both give the published numbers (same neighbour sets, same sequential expansions; float32 sums in a
different order change values by ~1e-7) while never building the published N x N float matrices of
weights: neighbour lists are taken blockwise, the k-reciprocal weights are sparse, and Jaccard
distances are summed only over the non-zero entries both rows share. Inputs may be numpy arrays or
torch tensors (CPU or CUDA); the work runs with torch on that device (numpy: on the CPU) and the
result has the input's kind.

Past the challenge size, re-rank from features instead (``reid.rerank_sparse``, re-exported here):
``classic_from_features`` / ``hard_weight_from_features`` give the same numbers in O(N k) memory,
as a full matrix or each query's top K; ``classic_blocks`` / ``hard_weight_blocks`` stream the
re-ranked rows block by block (for ``reid.blockwise_metrics``); ``rerank`` picks the dense or the
sparse path by size.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from reid.distance import ArrayLike, as_tensor, squared_euclidean
from reid.neighbors import row_blocks

ROW_BLOCK = 512  # rows of an (rows, N) distance block held at once
PAIR_BLOCK = 1 << 22  # (query entry, column entry) pairs expanded at once in the Jaccard sums
DENSE_TO_PAIR_COST = 8  # a gathered dense element costs about 1/8 of an expanded pair


def classic(dist_qg: ArrayLike, dist_qq: ArrayLike, dist_gg: ArrayLike, k1: int = 20, k2: int = 6,
            lambda_value: float = 0.3) -> ArrayLike:
    """Classic k-reciprocal re-ranking, as the published ``re_ranking`` computes it.

    dist_qg: (m, n), dist_qq: (m, m), dist_gg: (n, n) float32 **squared Euclidean** distances between
    L2-normalised features (``reid.distance.squared_euclidean``, unclipped). numpy or torch.
    Returns the (m, n) float32 re-ranked query-gallery distance, numpy if ``dist_qg`` is numpy.

    The published arithmetic is kept (README R1): the block matrix [[qq, qg], [qg^T, gg]] is squared
    again (so it holds |x - y|^4) and every column is divided by its maximum, then transposed: row i of
    the working distance O is column i of the squared matrix over its maximum. Neighbour lists are the
    first k1 + 1 entries of numpy's default ``argsort`` of O's rows (i itself included); where O has a
    tie among them, the row is sorted in full with that same ``argsort`` (torch: a stable sort), so
    the order matches. Reciprocal expansion uses round(k1 / 2) + 1 neighbours (numpy half-to-even) and
    a strict "more than 2/3" test against the original reciprocal set; query expansion averages the
    k2 nearest rows (i included); the result is lambda * Jaccard + (1 - lambda) * O on the query rows.
    Memory: the inputs plus O(N k1^2) and (m, N); no N x N array is built.
    """
    is_numpy = isinstance(dist_qg, np.ndarray)
    qg = as_tensor(dist_qg)
    qq, gg = as_tensor(dist_qq, device=qg.device), as_tensor(dist_gg, device=qg.device)
    m, n = qg.shape
    nearest, row_max, o_query = _classic_neighbours(qg, qq, gg, k1 + 1, numpy_order=is_numpy)  # (N, k1 + 1)

    with _one_thread_on_cpu(qg.device):
        v = _classic_weights(qg, qq, gg, nearest, row_max, k1)  # sparse V, (N, N)
        if k2 != 1:  # query expansion: mean of the k2 nearest rows of V, for every row
            v = v.mean_of_rows(nearest[:, :k2])
    shared = _sum_of_minima(v.select_rows(m), v, m, n, column_offset=m).float()  # (m, n) sum of minima
    jaccard = 1.0 - shared / (2.0 - shared)  # = 1 - sum min / sum max, rows of V summing to 1
    final = jaccard * lambda_value + o_query * (1 - lambda_value)
    return final.cpu().numpy() if is_numpy else final


def hard_weight(query_feats: ArrayLike, gallery_feats: ArrayLike, k1: int = 20, k2: int = 6,
                lambda_value: float = 0.7, expansion_threshold: float = 2 / 3) -> ArrayLike:
    """The paper's hard-weight post-processing, as the published ``postprocess_distance`` computes it.

    query_feats: (m, d), gallery_feats: (n, d) float32 L2-normalised features (numpy or torch). The
    distance D is squared Euclidean (``reid.distance.squared_euclidean``), used as is (no squaring,
    no max-normalisation). Returns the (m, n) float32 distance, numpy if ``query_feats`` is numpy.

    The published details are kept (README R2): k1 (not k1 + 1) nearest neighbours from torch.topk,
    half sets of k1 // 2, a non-strict ``>= expansion_threshold`` test; a query's walk over its
    reciprocal list also visits the half set appended by its first successful merge (the published
    list aliasing); the gallery set drops its first element before testing; query then gallery
    expansion are in place and sequential (a row averages the already-expanded rows of earlier
    neighbours and the original rows of later ones); the result is
    (1 - lambda) * (row-L2-normalised D) + lambda * (1 - sum min / sum max).
    The sequential expansions run level by level (rows whose earlier neighbours are all done are
    computed together) with the same float32 additions in the same order. Memory: an (n, n) float32
    array for the expanded gallery rows (they are dense in general), plus O(N k1^2); D is never built
    beyond blocks of rows.
    """
    is_numpy = isinstance(query_feats, np.ndarray)
    q = as_tensor(query_feats)
    g = as_tensor(gallery_feats, device=q.device)
    m, n = q.shape[0], g.shape[0]
    z = torch.cat([q, g])
    dist_qg = squared_euclidean(q, g)  # (m, n)
    tq = _topk_rows(lambda rows: squared_euclidean(q[rows], z), m, k1)  # (m, k1) over queries + gallery
    tg_all, tgg = _gallery_neighbours(g, z, m, k1)  # (n, k1) over all, (n, k1) over the gallery
    with _one_thread_on_cpu(q.device):
        thalf = tgg[:, :k1 // 2]
        h_mask = _contains_self(thalf, thalf)  # (n, k1 // 2): H(g) = thalf[g][h_mask[g]]
        query_sets = _query_sets(tq, tg_all, thalf, h_mask, expansion_threshold)  # R*(p), (m, S)
        gallery_sets = _gallery_sets(tgg, thalf, h_mask, expansion_threshold)  # R*(g), (n, S')
        # binary k-reciprocal vectors, then the in-place sequential expansions (queries first)
        width = max(query_sets.shape[1], gallery_sets.shape[1])
        old_sets = torch.cat([_distinct_columns(query_sets, width), _distinct_columns(gallery_sets, width)])
        query_neighbours = tq[:, :k2]
        earlier_query = query_neighbours < torch.arange(m, device=q.device)[:, None]
        q_vec = _sequential_mean(query_neighbours, earlier_query, old_sets, n)  # (m, n)
        gallery_neighbours = tgg[:, 1:k2 + 1]  # position 0 (itself) skipped
        earlier_gallery = gallery_neighbours < torch.arange(n, device=q.device)[:, None]
        g_vec = _sequential_mean(gallery_neighbours, earlier_gallery, old_sets[m:], n)  # (n, n)

    g_sums = g_vec.sum(1).double()
    inter = _sum_of_minima_dense(q_vec, g_vec)  # (m, n)
    union = q_vec.sum(1).double()[:, None] + g_sums[None, :] - inter
    jaccard = (1.0 - inter / union).float()  # 0 / 0 (two empty vectors) stays NaN, as published
    final = (1 - lambda_value) * F.normalize(dist_qg, p=2, dim=1) + lambda_value * jaccard
    return final.cpu().numpy() if is_numpy else final


@contextlib.contextmanager
def _one_thread_on_cpu(device: torch.device):
    """Run a phase of many small tensor operations on one CPU thread.

    Each multi-threaded torch operation ends in a barrier; with thousands of small operations and
    other processes sharing the cores, those barriers cost far more than the work (measured 5x
    slower on a busy 2-core machine). Large single operations (distances, top-k) keep every thread.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# classic: neighbour lists and entries of the working distance O


def _classic_weights(qg, qq, gg, nearest, row_max, k1: int) -> _Sparse:
    """Sparse V: V[i, e] = exp(-O[i, e]) normalised over the expanded k-reciprocal set E(i)."""
    total = nearest.shape[0]
    # k-reciprocal sets R(i) and their expansion by the candidates' half-size reciprocal sets
    reciprocal = _contains_self(nearest, nearest)  # (N, k1 + 1): i is among nearest[i, t]'s neighbours
    half = int(np.around(k1 / 2.0)) + 1
    near_half = nearest[:, :half]  # (N, half)
    half_reciprocal = _contains_self(near_half, near_half)  # (N, half)
    members = torch.where(reciprocal, nearest, -1)  # R(i), -1 = empty slot
    candidates = members.clamp(min=0)
    cand_sets = near_half[candidates]  # (N, k1 + 1, half)
    cand_mask = half_reciprocal[candidates] & reciprocal[:, :, None]
    overlap = _count_in(cand_sets, cand_mask, members)  # (N, k1 + 1) |R(c) ∩ R(i)|
    accepted = reciprocal & (overlap.double() > (2.0 / 3.0) * cand_mask.sum(2).double())
    expanded = torch.where(cand_mask & accepted[:, :, None], cand_sets, -1).reshape(total, -1)
    rows, columns = _distinct_entries(torch.cat([members, expanded], dim=1))  # E(i), sorted
    # O[i, e] = S[e, i] / max_i, gathered from the inputs
    weights = torch.exp(-(_squared_entry(qg, qq, gg, columns, rows) / row_max[rows]))
    row_sums = torch.zeros(total, dtype=torch.float32, device=qg.device).index_add_(0, rows, weights)
    return _Sparse(rows, columns, weights / row_sums[rows], total, total)


def _classic_neighbours(qg: torch.Tensor, qq: torch.Tensor, gg: torch.Tensor, count: int, numpy_order: bool):
    """Rows of O in blocks -> (nearest (N, count) int64, row maxima (N,), O[:m, m:] (m, n)).

    Row i of O is column i of the squared block matrix divided by that column's maximum: query rows
    read [qq^T | qg], gallery rows [qg^T | gg^T] (gg is transposed once so rows are contiguous).
    Division by a positive maximum keeps the order, so candidates come from the squared values; a
    row is sorted in full only when its candidates' O values are not strictly increasing.
    """
    m, n = qg.shape
    total = m + n
    left = torch.cat([qq.t(), qg.t()])  # (N, m): the query part of every row
    gg_t = gg.t().contiguous()
    nearest = torch.empty((total, count), dtype=torch.int64, device=qg.device)
    row_max = torch.empty(total, dtype=torch.float32, device=qg.device)
    o_query = torch.empty((m, n), dtype=torch.float32, device=qg.device)
    blocks = [(a, min(a + ROW_BLOCK, m)) for a in range(0, m, ROW_BLOCK)]
    blocks += [(a, min(a + ROW_BLOCK, total)) for a in range(m, total, ROW_BLOCK)]
    for start, stop in blocks:
        left_part = left[start:stop] * left[start:stop]  # (b, m) float32, as the reference squares
        right_part = qg[start:stop] if start < m else gg_t[start - m:stop - m]
        right_part = right_part * right_part  # (b, n)
        maxima = torch.maximum(left_part.max(dim=1).values, right_part.max(dim=1).values)
        row_max[start:stop] = maxima
        if start < m:
            o_query[start:stop] = right_part / maxima[:, None]
        nearest[start:stop] = _smallest_in_order(left_part, right_part, maxima, count, numpy_order)
    return nearest, row_max, o_query


def _smallest_in_order(left_part, right_part, maxima, count: int, numpy_order: bool) -> torch.Tensor:
    """(b, count) indices of each row's smallest O = [left | right] / max, in numpy argsort's order."""
    width = left_part.shape[1] + right_part.shape[1]
    take = min(count + 1, width)
    values_l, index_l = torch.topk(left_part, min(take, left_part.shape[1]), dim=1, largest=False)
    values_r, index_r = torch.topk(right_part, min(take, right_part.shape[1]), dim=1, largest=False)
    values = torch.cat([values_l, values_r], dim=1)
    index = torch.cat([index_l, index_r + left_part.shape[1]], dim=1)
    values, picked = torch.topk(values, take, dim=1, largest=False, sorted=True)
    index = torch.gather(index, 1, picked)
    o_values = values / maxima[:, None]
    ambiguous = (o_values[:, 1:] <= o_values[:, :-1]).any(1) if take == count + 1 else torch.ones_like(maxima, dtype=torch.bool)
    if ambiguous.any():
        rows = torch.nonzero(ambiguous).flatten()
        full = torch.cat([left_part[rows], right_part[rows]], dim=1) / maxima[rows, None]
        index[rows] = _full_order(full, numpy_order)[:, :take]
    return index[:, :count]


def _full_order(block: torch.Tensor, numpy_order: bool) -> torch.Tensor:
    if numpy_order:  # numpy's default (unstable) argsort, exactly as the published code sorts
        return torch.from_numpy(np.argsort(block.cpu().numpy(), axis=1)).to(block.device)
    return torch.sort(block, dim=1, stable=True).indices


def _squared_entry(qg, qq, gg, rows_of_matrix, columns_of_matrix) -> torch.Tensor:
    """Entries S[r, c] of the squared block matrix [[qq, qg], [qg^T, gg]]^2 (float32, as the reference)."""
    m = qg.shape[0]
    r, c = rows_of_matrix, columns_of_matrix
    out = torch.empty(r.shape, dtype=torch.float32, device=qg.device)
    for r_query in (True, False):
        for c_query in (True, False):
            sel = ((r < m) == r_query) & ((c < m) == c_query)
            rs, cs = r[sel], c[sel]
            if r_query and c_query:
                out[sel] = qq[rs, cs]
            elif r_query:
                out[sel] = qg[rs, cs - m]
            elif c_query:
                out[sel] = qg[cs, rs - m]
            else:
                out[sel] = gg[rs - m, cs - m]
    return out * out


# ---------------------------------------------------------------------------------------------
# hard weight: neighbour lists, reciprocal sets, sequential expansion


def _topk_rows(distance_of_rows, num_rows: int, k: int) -> torch.Tensor:
    """(num_rows, k) indices of the k smallest entries of each row (torch.topk, as the reference)."""
    parts = []
    for start, keep, stop in row_blocks(num_rows, ROW_BLOCK):  # no thin last block: its matmul could round differently
        block = distance_of_rows(slice(start, stop))[keep - start:]
        parts.append(torch.topk(block, k, dim=1, largest=False).indices)
    return torch.cat(parts) if parts else torch.empty((0, k), dtype=torch.int64)


def _gallery_neighbours(g: torch.Tensor, z: torch.Tensor, m: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery rows of D over [queries; gallery]: top k over all (N indices) and over the gallery only."""
    over_all, over_gallery = [], []
    for start, keep, stop in row_blocks(g.shape[0], ROW_BLOCK):  # no thin last block, as in _topk_rows
        block = squared_euclidean(g[start:stop], z)[keep - start:]  # (b, N)
        over_all.append(torch.topk(block, k, dim=1, largest=False).indices)
        over_gallery.append(torch.topk(block[:, m:], k, dim=1, largest=False).indices)
    return torch.cat(over_all), torch.cat(over_gallery)


def _half_set_passes(members, candidates, thalf, h_mask, threshold: float) -> torch.Tensor:
    """(rows, C) bool: |members[row] ∩ H(candidate)| >= threshold * |H(candidate)| (float64, non-strict)."""
    c = candidates.clamp(min=0)
    overlap = _count_in(thalf[c], h_mask[c], members)
    return overlap.double() >= h_mask[c].sum(2).double() * threshold


def _merged_half_sets(candidates, passed, thalf, h_mask) -> torch.Tensor:
    """(rows, C * half) the elements of H(c) for every passing candidate c, -1 elsewhere."""
    c = candidates.clamp(min=0)
    keep = h_mask[c] & passed[:, :, None]
    return torch.where(keep, thalf[c], -1).reshape(candidates.shape[0], -1)


def _query_sets(tq, tg_all, thalf, h_mask, threshold: float) -> torch.Tensor:
    """(m, k1 + k1 * half + half^2) R*(p) for every query (-1 = empty, repeats allowed).

    R(p): gallery items of p's list (over queries and gallery) that have p in their own list. The walk
    over R(p) merges H(g) when |R(p) ∩ H(g)| >= threshold |H(g)|; the first merge also appends H(g) to
    the list being walked (the published list aliasing), so those items are tested as well.
    """
    m = tq.shape[0]
    queries = torch.arange(m, device=tq.device)
    tq_gallery = (tq - m).clamp(min=0)
    in_r = (tq >= m) & (tg_all[tq_gallery] == queries[:, None, None]).any(2)
    p0 = torch.where(in_r, tq_gallery, -1)  # (m, k1), -1 = empty
    passed = (p0 >= 0) & _half_set_passes(p0, p0, thalf, h_mask, threshold)
    first = torch.argmax(passed.to(torch.uint8), dim=1)
    g_star = p0[queries, first].clamp(min=0)
    appended = torch.where(h_mask[g_star] & passed.any(1, keepdim=True), thalf[g_star], -1)  # (m, half)
    appended_passed = (appended >= 0) & _half_set_passes(p0, appended, thalf, h_mask, threshold)
    return torch.cat([p0, _merged_half_sets(p0, passed, thalf, h_mask),
                      _merged_half_sets(appended, appended_passed, thalf, h_mask)], dim=1)


def _gallery_sets(tgg, thalf, h_mask, threshold: float) -> torch.Tensor:
    """(n, k1 + k1 * half) R*(g) for every gallery item (-1 = empty), in row blocks."""
    n, k1 = tgg.shape
    parts = []
    for start in range(0, n, 4 * ROW_BLOCK):
        rows = torch.arange(start, min(start + 4 * ROW_BLOCK, n), device=tgg.device)
        lists = tgg[rows]
        in_list = (tgg[lists] == rows[:, None, None]).any(2)  # R(g) as a mask over g's list
        first = torch.argmax(in_list.to(torch.uint8), dim=1)
        without_first = in_list.clone()
        without_first[torch.arange(len(rows), device=tgg.device), first] = False
        others = torch.where(without_first, lists, -1)  # A(g): R(g) minus its first element
        passed = (others >= 0) & _half_set_passes(others, others, thalf, h_mask, threshold)
        parts.append(torch.cat([torch.where(in_list, lists, -1), _merged_half_sets(others, passed, thalf, h_mask)], dim=1))
    return torch.cat(parts)


def _distinct_columns(sets: torch.Tensor, width: int) -> torch.Tensor:
    """(R, C) column lists (-1 = empty, repeats allowed) -> (R, width) lists of distinct columns, -1 padded."""
    sentinel = torch.iinfo(torch.int64).max
    ordered = torch.sort(torch.where(sets >= 0, sets, sentinel), dim=1).values
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    ordered = torch.where(repeat | (ordered == sentinel), -1, ordered)
    return torch.cat([ordered, ordered.new_full((ordered.shape[0], width - ordered.shape[1]), -1)], dim=1)


def _dependency_levels(neighbours: torch.Tensor, is_new: torch.Tensor) -> torch.Tensor:
    """(R,) level of each row: 0 without earlier neighbours, else 1 + the highest level among them."""
    # One pass in row order over the (R, k2) neighbour lists: the dependency structure, not matrix cells.
    levels = [0] * neighbours.shape[0]
    for row, (near, new) in enumerate(zip(neighbours.tolist(), is_new.tolist())):
        levels[row] = max([levels[j] + 1 for j, flag in zip(near, new) if flag], default=0)
    return torch.tensor(levels, dtype=torch.int64, device=neighbours.device)


def _sequential_mean(neighbours: torch.Tensor, is_new: torch.Tensor, old_sets: torch.Tensor, width: int) -> torch.Tensor:
    """Rows r = 0, 1, ... in order: out[r] = (sum over t of source(r, t)) / T, in float32, in t order.

    neighbours: (R, T) indices; is_new: (R, T) bool, the neighbour is an earlier row of this same
    expansion (its index < r) whose updated row is used; otherwise the source is the binary row with
    ones at ``old_sets[neighbour]`` ((*, S) column lists, -1 = empty). Returns (R, width) float32.
    Rows are computed level by level; inside a level no row depends on another.
    """
    num_rows, steps = neighbours.shape
    device = neighbours.device
    out = torch.zeros((num_rows, width), dtype=torch.float32, device=device)
    levels = _dependency_levels(neighbours, is_new)
    order = torch.argsort(levels, stable=True)
    boundaries = torch.searchsorted(levels[order], torch.arange(int(levels.max()) + 2 if num_rows else 1, device=device)).tolist()
    chunk = max(1, (1 << 23) // max(width, 1))
    for level_start, level_stop in zip(boundaries[:-1], boundaries[1:]):
        for start in range(level_start, level_stop, chunk):
            rows = order[start:min(start + chunk, level_stop)]
            buffer = torch.zeros((len(rows), width), dtype=torch.float32, device=device)
            for t in range(steps):
                near, new = neighbours[rows, t], is_new[rows, t]
                new_rows = torch.nonzero(new).flatten()
                buffer[new_rows] += out.index_select(0, near[new_rows])  # rows are distinct: no lost updates
                old_rows = torch.nonzero(~new).flatten()
                cols = old_sets[near[old_rows]]
                keep = cols >= 0
                target = old_rows[:, None].expand_as(cols)[keep]
                buffer.index_put_((target, cols[keep]), torch.ones_like(target, dtype=torch.float32), accumulate=True)
            out[rows] = buffer / steps
    return out


def _sum_of_minima_dense(q_vec: torch.Tensor, g_vec: torch.Tensor) -> torch.Tensor:
    """(m, n_g) float64: sum over h of min(q_vec[p, h], g_vec[g, h]) for non-negative dense rows.

    Sparse gallery rows (typical: ~100 non-zeros): expand the pairs of non-zeros that share a column.
    Dense ones (noisy features make the sequential expansion spread): gather whole columns instead.
    """
    q_sparse = _Sparse.from_dense(q_vec)
    pairs = len(q_sparse.rows) * int(torch.count_nonzero(g_vec)) / max(g_vec.shape[1], 1)  # estimate
    dense_work = len(q_sparse.rows) * g_vec.shape[0]
    if pairs * DENSE_TO_PAIR_COST < dense_work:
        return _sum_of_minima(q_sparse, _Sparse.from_dense(g_vec), q_vec.shape[0], g_vec.shape[0], column_offset=0)
    return _shared_mass(q_vec, g_vec.t().contiguous())


def _shared_mass(q_vec: torch.Tensor, g_vec_t: torch.Tensor) -> torch.Tensor:
    """(m, n_g) float64: sum over h of min(q_vec[p, h], g_vec_t[h, g]); both dense, non-negative.

    q_vec: (m, n_h) query vectors; g_vec_t: (n_h, n_g) gallery vectors transposed (one row per column h).
    Only the non-zero columns of a query row matter: a block of queries gathers those rows of g_vec_t
    (padded to the block's largest support); work = m x support x n_g.
    """
    m, n_g = q_vec.shape[0], g_vec_t.shape[1]
    out = torch.empty((m, n_g), dtype=torch.float64, device=q_vec.device)
    support = (q_vec != 0).sum(1)
    by_support = torch.argsort(support)  # queries with similar supports share one padding width
    start = 0
    while start < m:
        width = max(int(support[by_support[min(start + 63, m - 1)]]), 1)
        stop = min(m, start + max(1, (1 << 24) // (width * n_g)), start + 64)
        queries = by_support[start:stop]
        columns = torch.topk((q_vec[queries] != 0).to(torch.uint8), width, dim=1).indices  # support first
        values = torch.gather(q_vec[queries], 1, columns)  # zeros where a support is shorter than width
        gathered = g_vec_t.index_select(0, columns.reshape(-1)).reshape(len(queries), width, n_g)
        torch.minimum(gathered, values[:, :, None], out=gathered)
        out[queries] = gathered.sum(1).double()
        start = stop
    return out


# ---------------------------------------------------------------------------------------------
# shared: sets, sparse rows, Jaccard numerators


def _contains_self(lists: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(R, C) bool: row index r appears in ``lists[candidates[r, c]]`` (lists: (R, K) neighbour lists)."""
    rows = torch.arange(lists.shape[0], device=lists.device)
    out = torch.empty(candidates.shape, dtype=torch.bool, device=lists.device)
    for start in range(0, lists.shape[0], 8 * ROW_BLOCK):
        part = slice(start, start + 8 * ROW_BLOCK)
        out[part] = (lists[candidates[part]] == rows[part, None, None]).any(2)
    return out


def _count_in(elements: torch.Tensor, element_mask: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(R, C) number of masked ``elements[r, c, :]`` that appear in ``members[r]`` (-1 = empty slot)."""
    out = torch.empty(elements.shape[:2], dtype=torch.int64, device=elements.device)
    for start in range(0, elements.shape[0], 2 * ROW_BLOCK):
        part = slice(start, start + 2 * ROW_BLOCK)
        inside = (elements[part, :, :, None] == members[part, None, None, :]).any(3) & element_mask[part]
        out[part] = inside.sum(2)
    return out


def _distinct_entries(columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, C) column lists with -1 for empty -> (rows, columns) of the distinct entries, sorted by row then column."""
    num_rows, width = columns.shape
    sentinel = torch.iinfo(torch.int64).max
    ordered = torch.sort(torch.where(columns >= 0, columns, sentinel), dim=1).values
    keep = ordered != sentinel
    keep[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
    rows = torch.arange(num_rows, device=columns.device)[:, None].expand(-1, width)
    return rows[keep], ordered[keep]


class _Sparse:
    """Sparse float32 rows in coordinate form sorted by (row, column)."""

    def __init__(self, rows, columns, values, num_rows: int, num_columns: int):
        self.rows, self.columns, self.values = rows, columns, values
        self.num_rows, self.num_columns = num_rows, num_columns

    @classmethod
    def from_dense(cls, dense: torch.Tensor) -> _Sparse:
        rows, columns = torch.nonzero(dense, as_tuple=True)
        return cls(rows, columns, dense[rows, columns], *dense.shape)

    def select_rows(self, count: int) -> _Sparse:
        """The first ``count`` rows."""
        keep = self.rows < count
        return _Sparse(self.rows[keep], self.columns[keep], self.values[keep], count, self.num_columns)

    def row_pointer(self) -> torch.Tensor:
        counts = torch.bincount(self.rows, minlength=self.num_rows)
        return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])

    def mean_of_rows(self, picks: torch.Tensor) -> _Sparse:
        """New row i = (sum over t of row picks[i, t]) / T, float32 (picks: (num_rows, T))."""
        pointer = self.row_pointer()
        source = picks.reshape(-1)
        counts = pointer[source + 1] - pointer[source]
        target = torch.arange(picks.shape[0], device=picks.device).repeat_interleave(picks.shape[1])
        entry = _expand_ranges(pointer[source], counts)
        target = target.repeat_interleave(counts)
        keys = target * self.num_columns + self.columns[entry]
        unique, inverse = torch.unique(keys, return_inverse=True)
        sums = torch.zeros(len(unique), dtype=torch.float32, device=keys.device).index_add_(0, inverse, self.values[entry])
        return _Sparse(unique // self.num_columns, unique % self.num_columns, sums / picks.shape[1], picks.shape[0], self.num_columns)


def _expand_ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of ranges [start, start + count) for each pair."""
    total = int(counts.sum())
    offsets = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=starts.device) - (offsets - starts).repeat_interleave(counts)


def _sum_of_minima(left: _Sparse, right: _Sparse, num_left: int, num_right: int, column_offset: int) -> torch.Tensor:
    """(num_left, num_right) float64: out[i, r] = sum over c of min(left[i, c], right[r + offset, c]).

    Only rows r >= column_offset of ``right`` are kept (shifted down by it). Pairs of non-zero entries
    sharing a column are expanded in blocks; everything else contributes zero.
    """
    device = left.values.device
    order = torch.argsort(right.columns, stable=True)  # right by column: for each column, its rows
    by_column_rows, by_column_values = right.rows[order], right.values[order]
    column_counts = torch.bincount(right.columns, minlength=right.num_columns)
    column_start = torch.cumsum(column_counts, 0) - column_counts
    out = torch.zeros(num_left * num_right, dtype=torch.float64, device=device)
    pairs_per_entry = column_counts[left.columns]
    cumulative = torch.cumsum(pairs_per_entry, 0)
    start = 0
    while start < len(left.rows):
        stop = int(torch.searchsorted(cumulative, cumulative[start] - pairs_per_entry[start] + PAIR_BLOCK, right=True))
        stop = max(stop, start + 1)
        part = slice(start, stop)
        counts = pairs_per_entry[part]
        entry = _expand_ranges(column_start[left.columns[part]], counts)
        source = torch.arange(start, stop, device=device).repeat_interleave(counts)
        other = by_column_rows[entry] - column_offset
        keep = other >= 0
        minima = torch.minimum(left.values[source], by_column_values[entry])
        out.index_add_(0, left.rows[source][keep] * num_right + other[keep], minima[keep].double())
        start = stop
    return out.reshape(num_left, num_right)


# Features-in entry points that scale past 100,000 images (never an N x N matrix): reid.rerank_sparse.
from reid.rerank_sparse import (  # noqa: E402, F401  (re-exported)
    RerankOutput,
    classic_blocks,
    classic_from_features,
    collect_blocks,
    hard_weight_blocks,
    hard_weight_from_features,
)

DENSE_THRESHOLD = 12_000
"""Default largest N = queries + gallery re-ranked by the dense functions (the challenge's 10,123 is)."""


def rerank(query_feats: ArrayLike, gallery_feats: ArrayLike, method: Literal["classic", "hard_weight"] = "classic",
           k1: int = 20, k2: int = 6, lambda_value: float | None = None, topk: int | None = None,
           device: str | torch.device | None = None, dense_threshold: int = DENSE_THRESHOLD) -> RerankOutput:
    """Re-rank from features with the dense reference path up to ``dense_threshold`` images, sparse above.

    query_feats (m, d), gallery_feats (n, d) L2-normalised float32 (numpy or torch); the distance is
    squared Euclidean. method: ``classic`` (``classic`` on the three distance matrices, or
    ``classic_from_features``) or ``hard_weight``. lambda_value None = the method's default (0.3
    classic, 0.7 hard-weight). device None = where the features are (numpy: the CPU). Both paths give
    the same numbers within 1e-5; the dense one holds N x N matrices (N = m + n), the sparse one O(N k1)
    plus one block. Returns the (m, n) float32 numpy matrix, or ``(indices, distances)`` of each
    query's ``topk`` best gallery items (ascending) when topk is given.
    """
    if method not in ("classic", "hard_weight"):
        raise ValueError(f"unknown re-ranking method {method!r}; expected 'classic' or 'hard_weight'")
    weight = {"lambda_value": lambda_value} if lambda_value is not None else {}
    if device is None:
        device = query_feats.device if isinstance(query_feats, torch.Tensor) else "cpu"
    if len(query_feats) + len(gallery_feats) > dense_threshold:
        sparse = classic_from_features if method == "classic" else hard_weight_from_features
        return sparse(query_feats, gallery_feats, k1=k1, k2=k2, topk=topk, device=device, **weight)
    q, g = query_feats, gallery_feats
    if not (isinstance(q, np.ndarray) and torch.device(device).type == "cpu"):  # numpy on the CPU stays numpy
        q, g = as_tensor(q, device=device), as_tensor(g, device=device)
    if method == "classic":
        out = classic(squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g), k1=k1, k2=k2, **weight)
    else:
        out = hard_weight(q, g, k1=k1, k2=k2, **weight)
    out = as_tensor(out)
    if topk is None:
        return out.cpu().numpy()
    if not 1 <= topk <= len(gallery_feats):
        raise ValueError(f"topk must be in [1, {len(gallery_feats)}] (the gallery size), got {topk}")
    return collect_blocks([(0, out)], len(query_feats), len(gallery_feats), topk)
