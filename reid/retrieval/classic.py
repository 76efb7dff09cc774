"""The classic k-reciprocal re-ranking (Zhong et al. 2017) as the published ``re_ranking`` computes it.

One engine for every input: ``rerank_blocks(distances, ...)`` reads the stacked distance W through a
source of ``reid.retrieval.sources`` (features blockwise, or the three given matrices) and never
builds an N x N array (N = queries + gallery). The definition is ``../shared/reference/README.md``
R1; the published arithmetic is kept: W is squared again (it is already a squared Euclidean
distance, so this is |x - y|^4) and each row is divided by its maximum, giving O; neighbour lists are
numpy ``argsort``'s order of O's rows; reciprocal expansion uses round(k1 / 2) + 1 neighbours (numpy
half-to-even) and a strict "more than 2/3" test against the original reciprocal set; V is the softmax
of -O over each expanded set; query expansion averages the k2 nearest rows of V (i included); the
result is lambda * Jaccard + (1 - lambda) * O on the query x gallery pairs.

How each dense quantity is obtained without the dense matrices:

1. one pass over W's tiles keeps each row's k1 + 2 smallest O (one more than R1 uses, to see a tie
   at the end of the list), their W^2, and the row maxima (a whole-row quantity, exact: every entry
   is seen once). Dividing by a positive maximum keeps the order, so the lists are ranked by W^2; a
   row whose first k1 + 2 O values hold an exact tie (duplicate images) is sorted again in full with
   numpy's default ``argsort``, the order of the published code;
2. reciprocal sets, expansions, V and its query expansion are sparse (``scipy.sparse``, O(N k1^2));
   weights of expansion members outside a row's list come from the source's single entries;
3. the Jaccard distance is computed for the query x gallery pairs only, one query block at a time
   (``reid.retrieval.sparse_rows.sum_of_minima``), combined with that block's O and yielded.

Results equal the published ones within 1e-5 (summation order differs, ~1e-7).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from reid.retrieval.neighbors import RunningSmallest, compact_rows, overlap_counts, reciprocal_mask
from reid.retrieval.sources import Block, Distances
from reid.retrieval.sparse_rows import TorchCsr, neighbour_mean, sets_to_csr, sum_of_minima


def rerank_blocks(distances: Distances, k1: int, k2: int, lambda_value: float) -> Iterator[Block]:
    """Classic re-ranking of ``distances`` (a source, W = squared Euclidean) as query blocks ``(start, (b, n))``.

    Does the neighbour pass and the sparse steps now, then returns an iterator over consecutive row
    blocks of the (m, n) float32 re-ranked distance on the source's device (a caller can score or cut
    each block without ever holding m x n).
    """
    m, total = distances.num_query, distances.size
    # 1. neighbour pass: each row's k1 + 2 nearest by O, their W^2 (most weights of step 4 are there), row maxima
    nearest, nearest_fourth, row_max = _neighbours(distances, min(k1 + 2, total), k1 + 2)
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
    weights = _set_weights(expanded, nearest, nearest_fourth, distances, row_max)
    if k2 != 1:
        weights = neighbour_mean(weights, forward[:, :k2])

    # 5. per query block: Jaccard against the gallery rows, combined with the query's O row
    query_rows = TorchCsr.from_scipy(weights[:m], distances.device)
    gallery_by_column = TorchCsr.from_scipy(weights[m:].T.tocsr(), distances.device)

    def blocks() -> Iterator[Block]:
        for start, dist_qg in distances.query_gallery_blocks():
            # in-place arithmetic (the blocks are large); each step rounds as the dense expression
            shared = sum_of_minima(query_rows, start, start + len(dist_qg), gallery_by_column)  # (b, n)
            jaccard = shared.div_(torch.rsub(shared, 2)).neg_().add_(1)  # 1 - s / (2 - s): rows of V sum to 1
            original = dist_qg.mul_(dist_qg).div_(row_max[start:start + len(dist_qg), None])  # O = W^2 / row max
            yield start, jaccard.mul_(lambda_value).add_(original.mul_(1 - lambda_value))

    return blocks()


def _neighbours(distances: Distances, width: int, checked: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """R1's ranking: each row's ``width`` first entries by O = W^2 / (row max of W^2).

    Returns ``(nearest (N, width) int64, their W^2 (N, width) float32, row max of W^2 (N,) float32
    tensor on the device)``. A row whose first ``checked`` O values contain an exact tie is redone on
    its full O row with numpy's default ``argsort``, the published order.
    """
    total = distances.size
    lists = RunningSmallest(total, width, distances.device)
    row_max = torch.zeros(total, dtype=torch.float32, device=distances.device)
    for r0, c0, dist in distances.tiles():
        fourth = dist.mul_(dist)  # (b, c): R1 squares the (already squared) distance matrix
        rows = slice(r0, r0 + len(fourth))
        row_max[rows] = torch.maximum(row_max[rows], fourth.amax(dim=1))
        lists.offer(r0, fourth, c0)
    ranked_o = lists.values[:, :checked] / row_max[:, None]
    tied = torch.nonzero((ranked_o[:, 1:] == ranked_o[:, :-1]).any(dim=1)).ravel()
    for rows, dist in distances.rows(tied):
        fourth = dist.mul_(dist)
        order = np.argsort((fourth / row_max[rows, None]).cpu().numpy(), axis=1)[:, :width]
        order = torch.from_numpy(order).to(distances.device)
        lists.indices[rows], lists.values[rows] = order, torch.gather(fourth, 1, order)
    return lists.indices.cpu().numpy(), lists.values.cpu().numpy(), row_max


def _set_weights(members: sp.csr_matrix, nearest: np.ndarray, nearest_fourth: np.ndarray, distances: Distances,
                 row_max: torch.Tensor) -> sp.csr_matrix:
    """R1 step 4's V: ``exp(-O[i, e]) / sum_e exp(-O[i, e])`` over each row's set (float32 csr).

    O[i, e] = W(i, e)^2 / row_max[i]. Most members (~98 % on clustered features) are in row i's
    ``nearest`` list (N, L), whose W^2 ``nearest_fourth`` came from the neighbour pass; the others are
    asked of the source (``entries``).
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
        rows, cols = (torch.from_numpy(index[missing]).to(distances.device) for index in (owners, targets))
        dist = distances.entries(rows, cols)
        fourth[missing] = (dist * dist).cpu().numpy()
    scores = np.exp(-(fourth / row_max.cpu().numpy()[owners]))
    totals = np.add.reduceat(scores, members.indptr[:-1]) if len(scores) else np.zeros(0, np.float32)
    totals = np.where(np.diff(members.indptr) == 0, 1, totals).astype(np.float32)
    return sp.csr_matrix((scores / np.repeat(totals, np.diff(members.indptr)), members.indices, members.indptr),
                         shape=members.shape, dtype=np.float32)
