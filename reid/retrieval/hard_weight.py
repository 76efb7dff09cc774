"""The paper's hard-weight re-ranking, as the published ``postprocess_distance`` computes it.

One engine: ``rerank_blocks(distances, ...)`` reads the stacked distance D of [queries; gallery]
through a source of ``reid.retrieval.sources`` (from features, blockwise: the published function
takes features) and never builds an N x N array. The definition is ``../shared/reference/README.md``
R2; D is the squared Euclidean distance (``reid.retrieval.distance.squared_euclidean``), not squared again, not
normalised. Every quirk of R2 is reproduced: k1 (not k1 + 1) neighbours from ``torch.topk``,
floor(k1 / 2) half sets, the non-strict ``>= expansion_threshold`` test, the list-aliasing walk of
the query expansion (only the first merge extends the walk, so the walk visits R(p) then the half
set of the first merging item: two vectorised rounds), the gallery set tested without its first
item, and the in-place sequential query then gallery expansions
(``reid.retrieval.sparse_rows.sequential_row_means``: batched by dependency level, the same order of
dependence as the loop); the result is (1 - lambda) * (row-L2-normalised D) + lambda * (1 - sum min /
sum max), and 0 / 0 (two empty vectors) stays NaN, as published.

1. one pass over D's tiles keeps each row's k1 nearest over all N images and over the gallery only;
   rows whose lists hold an exact tie (duplicate images) are redone on their full row with
   ``torch.topk``, the published order;
2. reciprocal sets, expansions and the sequential means are sparse (``scipy.sparse``);
3. per query block, the Jaccard distance (``sum_of_minima``) and the row L2 norm of the raw
   query x gallery distance (the ``Nrm`` term; exact, each block holding full rows) are combined.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from reid.retrieval.neighbors import RunningSmallest, compact_rows, overlap_counts, reciprocal_mask, smallest
from reid.retrieval.sources import Block, Distances
from reid.retrieval.sparse_rows import TorchCsr, sequential_row_means, sets_to_csr, sum_of_minima


def rerank_blocks(distances: Distances, k1: int, k2: int, lambda_value: float, expansion_threshold: float) -> Iterator[Block]:
    """Hard-weight re-ranking of ``distances`` (a source, D = squared Euclidean) as query blocks ``(start, (b, n))``.

    Builds the sets now, then returns an iterator over consecutive row blocks of the (m, n) float32
    re-ranked distance on the source's device.
    """
    m, n = distances.num_query, distances.size - distances.num_query
    # 1. neighbour pass on the stacked distance: k1 nearest over all images, and over the gallery
    near_all, near_gallery = _neighbours(distances, k1)
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
    left = TorchCsr.from_scipy(query_rows, distances.device)
    right_by_column = TorchCsr.from_scipy(gallery_rows.T.tocsr(), distances.device)
    left_sums, right_sums = (torch.from_numpy(np.asarray(rows.sum(axis=1), dtype=np.float32).ravel()).to(distances.device)
                             for rows in (query_rows, gallery_rows))
    del query_rows, gallery_rows

    def blocks() -> Iterator[Block]:
        for start, dist_qg in distances.query_gallery_blocks():
            stop = start + len(dist_qg)
            # in-place arithmetic (the blocks are large); sum max = sum q + sum g - sum min
            shared = sum_of_minima(left, start, stop, right_by_column)  # (b, n)
            union = (left_sums[start:stop, None] + right_sums[None, :]).sub_(shared)
            jaccard = shared.div_(union).neg_().add_(1)  # 1 - min / max
            yield start, F.normalize(dist_qg, p=2, dim=1).mul_(1 - lambda_value).add_(jaccard.mul_(lambda_value))

    return blocks()


def _neighbours(distances: Distances, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """R2's lists on D (N, N): each row's k1 nearest over all N, and over the gallery.

    Returns ``(near_all (N, k1) int64 in [0, N), near_gallery (N, k1) int64 gallery indices)``
    ascending, as ``torch.topk`` of the full rows orders them (rows with an exact tie among their
    k1 + 1 nearest are redone on full rows).
    """
    total, m = distances.size, distances.num_query
    everything = RunningSmallest(total, min(k1 + 1, total), distances.device)
    gallery = RunningSmallest(total, min(k1 + 1, total - m), distances.device)
    same_width = everything.values.shape[1] == gallery.values.shape[1]
    for r0, c0, dist in distances.tiles():
        split = min(max(m - c0, 0), dist.shape[1])  # the tile's first ``split`` columns are queries
        if split == 0:  # gallery columns only: the same candidates serve both lists
            candidates = everything.offer(r0, dist, c0)
            gallery.offer(r0, dist, c0, candidates if same_width else None)
        elif split == dist.shape[1]:  # query columns only
            everything.offer(r0, dist, c0)
        else:  # both: the smallest of each part; together they hold the smallest of the tile
            query_values, query_where = smallest(dist[:, :split], everything.values.shape[1])
            gallery_values, gallery_where = gallery.offer(r0, dist[:, split:], c0 + split)
            everything.offer(r0, dist, c0, (torch.cat([query_values, gallery_values], dim=1),
                                            torch.cat([query_where, gallery_where + split], dim=1)))
    near_all, near_gallery = everything.indices[:, :k1], gallery.indices[:, :k1] - m
    is_gallery = torch.arange(total, device=distances.device) >= m
    tied = everything.tied(everything.values.shape[1]) | (gallery.tied(gallery.values.shape[1]) & is_gallery)
    for rows, dist in distances.rows(torch.nonzero(tied).ravel()):
        near_all[rows], near_gallery[rows] = smallest(dist, k1)[1], smallest(dist[:, m:], k1)[1]
    return near_all.cpu().numpy(), near_gallery.cpu().numpy()


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
