"""Rank fusion of several models' distance matrices: similarity fusion and dissimilarity fusion.

Both take M (m, n) arrays whose rows and columns are the same queries and gallery images in the same
order (``reid.matrices.check_aligned`` checks a list of ``DistanceMatrix`` and gives their values) and
return the fused (m, n) array: float64 when any input is float64, else float32. They reproduce the
published scripts (``my_py/sim_fuse.py``, ``my_py/dissim_fuse.py``; reference README "F1", "F2")
value for value when given the matrices as the scripts read them, i.e. the CSV text parsed to
float64 (``DistanceMatrix.read_csv`` does that by default).

The paper's final step: similarity-fuse the models, dissimilarity-fuse the same models, then
similarity-fuse those two results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reid.errors import InputError


def similarity_fusion(matrices: Sequence[np.ndarray], weights: Sequence[float] | None = None,
                      decimals: int | None = 5) -> np.ndarray:
    """Weighted mean of aligned distance matrices, rounded like the published ``sim_fuse``.

    matrices: M (m, n) arrays of the same queries and gallery images in the same order.
    weights: M non-negative numbers (not all zero); None = the plain mean. The sum runs left to right
        in float64 (``((v1 + v2) + v3) ...``), then divides by M (or by the sum of the weights, after
        multiplying each matrix by its weight), so unit weights give the plain mean bit for bit.
    decimals: round the result to this many decimals with numpy's ``round`` (what the published
        script's ``DataFrame.round(5)`` does; it changes ties of the written 5th decimal); None keeps
        every digit.
    Returns the (m, n) mean, float64 if any input is float64, else float32.
    """
    _check_shapes(matrices)
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(matrices):
            raise InputError(f"{len(weights)} weights for {len(matrices)} matrices")
        if not all(np.isfinite(weights)) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InputError(f"weights must be finite, non-negative and not all zero, got {weights}")
    total = np.array(matrices[0], dtype=np.float64)
    if weights is not None:
        total *= weights[0]
    for k, matrix in enumerate(matrices[1:], start=1):
        total += matrix if weights is None else weights[k] * np.asarray(matrix, dtype=np.float64)
    total /= len(matrices) if weights is None else sum(weights)
    if decimals is not None:
        total = np.round(total, decimals)
    return _result(matrices, total)


@dataclass
class DissimilarityWeights:
    """Per-query model weights of the dissimilarity fusion, with the published script's two counters.

    weights: (m, M) float64, the final (inverted) weight of each model for each query.
    inter0_cnt: models given the uniform weight 1/M because no top-k item was shared by enough
        models for that query (counted once per model, as the script's ``inter0_cnt``).
    cnt2: models that shared none of the agreed items and got the 0.1 floor weight (``cnt2``).
    """

    weights: np.ndarray
    inter0_cnt: int
    cnt2: int


def dissimilarity_weights(matrices: Sequence[np.ndarray], topk: int = 15) -> DissimilarityWeights:
    """Per-query weights of the published ``dissim_fuse`` (reference README F2).

    For each query row and model k: the top-k columns (smallest values; ties keep the lower column
    first); "agreed" columns appear in at least M // 2 + 1 models' top-k; a_k = |agreed ∩ top-k_k|,
    T = sum a_k. Proportional weights w_k = a_k / T (0.1 when a_k = 0; all 1 / M when T = 0), then
    **inverted**: w'_k = 1 / (w_k * sum_j 1 / w_j), so models that agree more get less weight.
    """
    _check_shapes(matrices)
    if topk < 1:
        raise InputError(f"topk must be at least 1, got {topk}")
    num_models = len(matrices)
    needed = num_models // 2 + 1
    in_top = [_smallest_mask(np.asarray(matrix), topk) for matrix in matrices]  # M x (m, n) bool
    agreed = np.sum(in_top, axis=0, dtype=np.int32) >= needed
    shared = np.stack([(mask & agreed).sum(1) for mask in in_top], axis=1).astype(np.float64)  # (m, M) a_k
    total = shared.sum(1, keepdims=True)
    uniform = total[:, 0] == 0
    proportional = np.where(shared == 0, 0.1, shared / np.where(total == 0, 1.0, total))
    proportional[uniform] = 1.0 / num_models
    inverse_sum = np.zeros(len(shared))
    for k in range(num_models):  # left to right, as Python's sum()
        inverse_sum = inverse_sum + 1.0 / proportional[:, k]
    weights = 1.0 / (proportional * inverse_sum[:, None])
    return DissimilarityWeights(
        weights=weights,
        inter0_cnt=int(uniform.sum()) * num_models,
        cnt2=int(((shared == 0) & ~uniform[:, None]).sum()),
    )


def dissimilarity_fusion(matrices: Sequence[np.ndarray], topk: int = 15, decimals: int | None = 5,
                         weights: DissimilarityWeights | None = None) -> np.ndarray:
    """Per-query weighted sum of aligned matrices with the weights of ``dissimilarity_weights``.

    value = sum_k w'_k * v_k, left to right in float64, then rounded to ``decimals`` exactly as
    Python's ``round(x, 5)`` (correct decimal rounding; None keeps every digit). Returns the (m, n)
    values, float64 if any input is float64, else float32. weights: the result of ``dissimilarity_weights(matrices,
    topk)`` when already computed (e.g. to report its counters), else computed here.
    """
    if weights is None:
        weights = dissimilarity_weights(matrices, topk)
    else:
        _check_shapes(matrices)
    weights = weights.weights
    total = np.zeros(np.shape(matrices[0]))
    for k, matrix in enumerate(matrices):
        total = total + weights[:, k:k + 1] * np.asarray(matrix, dtype=np.float64)
    if decimals is not None:
        total = round_like_python(total, decimals)
    return _result(matrices, total)


def round_like_python(values: np.ndarray, decimals: int) -> np.ndarray:
    """Python's ``round(x, decimals)`` for every element (correctly rounded; numpy's may differ by one unit).

    numpy scales by 10**decimals, which can move a value across the rounding boundary; the few
    elements that lie within rounding error of a boundary are redone with Python's ``round``.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.round(values, decimals)
    scaled = values * 10.0 ** decimals
    with np.errstate(invalid="ignore"):  # inf - inf: nan, never near a half
        distance_to_half = scaled - np.floor(scaled)
    distance_to_half -= 0.5
    np.abs(distance_to_half, out=distance_to_half)
    peak = max(abs(float(np.nanmin(scaled, initial=0.0))), abs(float(np.nanmax(scaled, initial=0.0))))
    if not np.isfinite(peak):
        peak = float(np.abs(scaled[np.isfinite(scaled)]).max(initial=0.0))
    bound = 1e-9 * max(1.0, peak)  # far above the rounding error of x * 10**decimals
    for index in zip(*np.nonzero(distance_to_half < bound)):
        out[index] = round(float(values[index]), decimals)
    return out


def _smallest_mask(values: np.ndarray, k: int) -> np.ndarray:
    """(m, n) bool: the k smallest entries of each row; among equal values the lower columns first
    (the set a stable sort's first k would give)."""
    m, n = values.shape
    if k >= n:
        return np.ones((m, n), dtype=bool)
    kth = np.partition(values, k - 1, axis=1)[:, k - 1:k]  # (m, 1) k-th smallest value
    below = values < kth
    tied = values == kth
    room = k - below.sum(1, keepdims=True)
    return below | (tied & (np.cumsum(tied, axis=1) <= room))


def _check_shapes(matrices: Sequence[np.ndarray]) -> None:
    if len(matrices) == 0:
        raise InputError("no matrices to fuse")
    shapes = {np.shape(matrix) for matrix in matrices}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"the matrices must all be (m, n) of one shape, got shapes {[np.shape(m) for m in matrices]}")


def _result(matrices: Sequence[np.ndarray], values: np.ndarray) -> np.ndarray:
    as_float64 = any(np.asarray(matrix).dtype == np.float64 for matrix in matrices)
    return values if as_float64 else values.astype(np.float32)
