"""What ``evaluate.py``, ``predict.py`` and ``my_py/name_*.py`` make of a split: matrices with ids, names, rank-list choices, score tables.

The splits themselves (``test``, ``challenge``, ``fold<k>``: query and gallery rows in evaluation
order) come from ``reid.layout.split_frames``; the matrix of a split has one row per query row and
one column per gallery row, in that order, and its ids are the rows' ``player`` column (which on the
challenge holds the file number). The distances (``raw``, ``classic``, ``hard``) come from
``reid.scoring.distance_matrices``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from reid.errors import InputError
from reid.layout import relative_image_path, split_frames
from reid.matrices import DistanceMatrix, id_mismatch
from reid.scoring import DISTANCES, SCORES


def split_matrix(values: np.ndarray, query: pd.DataFrame, gallery: pd.DataFrame) -> DistanceMatrix:
    """A split's (m, n) distances with their ids: the ``player`` column (player ids, or challenge file numbers)."""
    return DistanceMatrix(values, query["player"].to_numpy(np.int64), gallery["player"].to_numpy(np.int64))


def model_names(checkpoints: Sequence[str | os.PathLike]) -> list[str]:
    """A short distinct folder name per checkpoint: its run folder (``model/<run>/best.pth`` -> ``<run>``),
    with the file stem added where two checkpoints share a run folder, and a number where still equal."""
    paths = [Path(p) for p in checkpoints]
    names = [p.parent.name or p.stem for p in paths]
    names = [f"{name}_{p.stem}" if names.count(name) > 1 else name for name, p in zip(names, paths)]
    return [f"{name}_{i + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def evaluation_names(query: pd.DataFrame, gallery: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What each row and column of a split's matrix shows: (query table, gallery table), columns
    ``index`` (0-based row / column of the matrix), ``id`` (the id written in the CSV: the player on the
    test split, the file number on the challenge), ``img_id`` (file stem) and ``path`` (relative to data_dir)."""
    def table(rows: pd.DataFrame) -> pd.DataFrame:
        paths = [relative_image_path(folder, img_id) for folder, img_id in zip(rows["folder"], rows["img_id"])]
        return pd.DataFrame({"index": np.arange(len(rows)), "id": rows["player"].to_numpy(np.int64),
                             "img_id": rows["img_id"].astype(str).to_numpy(), "path": paths})
    return table(query), table(gallery)


def choose_queries(average_precisions: np.ndarray, count: int, how: Literal["spread", "hardest"] = "spread") -> np.ndarray:
    """Row indices of ``count`` queries to show: ``spread`` = evenly spaced in evaluation order,
    ``hardest`` = the lowest AP first (queries without a true match skipped)."""
    average_precisions = np.asarray(average_precisions)
    count = min(count, len(average_precisions))
    if how == "spread":
        return np.unique(np.linspace(0, len(average_precisions) - 1, count).round().astype(np.int64))
    if how == "hardest":
        scored = np.flatnonzero(~np.isnan(average_precisions))
        return scored[np.argsort(average_precisions[scored], kind="stable")[:count]]
    raise ValueError(f"unknown query choice {how!r}; expected spread or hardest")


def scores_table(scores: dict[str, dict[str, float]]) -> pd.DataFrame:
    """{model: ``score_matrices`` output} -> one row per (model, distance): model, distance, map, rank1,
    rank5, rank10, minp (fractions)."""
    rows = []
    for name, values in scores.items():
        for distance in DISTANCES:
            if f"map_{distance}" in values:
                rows.append({"model": name, "distance": distance,
                             **{score: values.get(f"{score}_{distance}", math.nan) for score in SCORES}})
    return pd.DataFrame(rows)


def write_split_names(data_dir: str | os.PathLike, split: str, output_dir: str | os.PathLike,
                      matrix_csv: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``<split>_query_names.csv`` and ``<split>_gallery_names.csv`` (see ``evaluation_names``) into
    ``output_dir``; with ``matrix_csv``, first check that the saved matrix's ids are the split's, in order
    (``InputError`` saying how they differ otherwise, ``reid.matrices.id_mismatch``). Returns the two paths."""
    query_names, gallery_names = evaluation_names(*split_frames(data_dir, split))
    if matrix_csv is not None:
        matrix = DistanceMatrix.read_csv(matrix_csv, dtype=np.float32)
        for what, found, names in (("query", matrix.query_ids, query_names), ("gallery", matrix.gallery_ids, gallery_names)):
            problem = id_mismatch(what, found, names["id"].to_numpy(), "the matrix", f"the {split} split",
                                  expected_labels=names["img_id"].to_numpy())
            if problem:
                raise InputError(f"{matrix_csv} is not a matrix of the {split} split in evaluation order: {problem}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = output_dir / f"{split}_query_names.csv", output_dir / f"{split}_gallery_names.csv"
    query_names.to_csv(paths[0], index=False)
    gallery_names.to_csv(paths[1], index=False)
    return paths
