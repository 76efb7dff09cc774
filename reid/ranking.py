"""Searching new crops: each query's ranked gallery as a table.

The distances themselves come from ``reid.scoring.distance_matrices`` (raw squared Euclidean, or
a re-ranking of ``reid.retrieval.rerank``, its settings fitted to small sets there), the same
functions the evaluation uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

RerankName = Literal["none", "classic", "hard_weight"]
# --rerank names -> the distance names of reid.scoring.distance_matrices
DISTANCE_OF = {"none": "raw", "classic": "classic", "hard_weight": "hard"}
RANKING_COLUMNS = ("query", "rank", "gallery", "distance")


def ranked_table(dist: np.ndarray, query_names: Sequence[str], gallery_names: Sequence[str],
                 topk: int | None = None) -> pd.DataFrame:
    """dist: (m, n) distances, smaller = closer; a +inf entry is a pair left out (e.g. a crop and itself),
    NaN (the hard-weight re-ranking's 0 / 0) ranks last. Returns each query's ``topk`` (None = all)
    nearest gallery crops, nearest first, as rows ``query, rank, gallery, distance`` (rank from 1;
    ties keep the gallery order)."""
    dist = np.asarray(dist)
    order = np.argsort(dist, axis=1, kind="stable")[:, :topk]  # (m, k)
    values = np.take_along_axis(dist, order, axis=1)
    kept = ~np.isposinf(values)  # (m, k)
    rows, columns = np.nonzero(kept)
    ranks = np.cumsum(kept, axis=1)[rows, columns]
    return pd.DataFrame({"query": np.asarray(query_names, dtype=object)[rows], "rank": ranks,
                         "gallery": np.asarray(gallery_names, dtype=object)[order[rows, columns]],
                         "distance": values[rows, columns]}, columns=list(RANKING_COLUMNS))
