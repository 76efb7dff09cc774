"""The splits of ``evaluate.py`` and ``predict.py``: their rows, matrices, names and score tables.

Splits: ``test`` (the test rows of ``train_df.csv``; ids are player ids), ``challenge``
(``challenge_df.csv``; ids are file numbers, no identities) and ``fold<k>`` (cross-validation fold k
of ``train_df.csv`` held out, as ``train_our_post.py --fold k`` evaluates). Each split is returned as
(query rows, gallery rows) in evaluation order; the matrix of a split has one row per query row and
one column per gallery row, in that order, and its ids are the rows' ``player`` column (which on the
challenge holds the file number).

The distances themselves (``raw``, ``classic``, ``hard``) come from ``reid.evaluation.distance_matrices``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from reid import metrics
from reid.data import load_train_frame, query_gallery, split_train_test
from reid.download import DATA_FOLDER
from reid.errors import InputError
from reid.evaluation import DISTANCES, SCORES
from reid.matrices import DistanceMatrix

CHALLENGE_COLUMNS = ("img_id", "folder", "player", "img_type")
# Published settings of both re-rankings (predict.py of the paper's code: k1 20, k2 6, lambda 0.7).
RERANK_DEFAULTS = {"k1": 20, "k2": 6, "lambda_value": 0.7}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> the first GPU when there is one, else the CPU; any other value is a torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_challenge_frame(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``data_dir/data_reid/challenge_df.csv`` (written by ``preprocess_data.py``) and check its columns."""
    path = Path(data_dir) / DATA_FOLDER / "challenge_df.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run download_data.py and preprocess_data.py first "
                                f"(or pass --data-dir, the folder that holds data_reid/)")
    frame = pd.read_csv(path, dtype={"folder": str})
    missing = [column for column in CHALLENGE_COLUMNS if column not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(CHALLENGE_COLUMNS)} "
                         f"(write it again with preprocess_data.py)")
    return frame


def split_frames(data_dir: str | os.PathLike, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(query rows, gallery rows) of ``split`` (``test``, ``challenge`` or ``fold<k>``), each in evaluation order."""
    if split == "challenge":
        return query_gallery(load_challenge_frame(data_dir))
    if split == "test":
        return query_gallery(split_train_test(load_train_frame(data_dir), fold=-1)[1])
    if split.startswith("fold") and split[4:].isdigit():
        return query_gallery(split_train_test(load_train_frame(data_dir), fold=int(split[4:]))[1])
    raise InputError(f"unknown split {split!r}; expected test, challenge or fold<k> (e.g. fold3)")


def held_out_split(training_config: dict) -> str:
    """The split a checkpoint was evaluated on during training: ``test`` or ``fold<k>``."""
    fold = int(training_config.get("fold", -1))
    return "test" if fold == -1 or training_config.get("train_on_all", False) else f"fold{fold}"


def rerank_settings(training_config: dict, k1: int | None = None, k2: int | None = None,
                    lambda_value: float | None = None) -> dict[str, float]:
    """Re-ranking settings: the given values, else the checkpoint's training values, else the published ones."""
    given = {"k1": k1, "k2": k2, "lambda_value": lambda_value}
    return {name: given[name] if given[name] is not None else training_config.get(name, default)
            for name, default in RERANK_DEFAULTS.items()}


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
        paths = [f"{DATA_FOLDER}/{folder}/{img_id}.jpeg" for folder, img_id in zip(rows["folder"], rows["img_id"])]
        return pd.DataFrame({"index": np.arange(len(rows)), "id": rows["player"].to_numpy(np.int64),
                             "img_id": rows["img_id"].astype(str).to_numpy(), "path": paths})
    return table(query), table(gallery)


def query_average_precision(dist: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """(num_query,) float64 AP of each query (NaN without a true match), as ``reid.metrics.mean_ap`` averages them."""
    return np.concatenate([np.asarray(metrics.average_precision(ranked))
                           for ranked in metrics.ranked_blocks(dist, query_ids, gallery_ids)])


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
    (``InputError`` naming the first difference otherwise). Returns the two paths."""
    query_names, gallery_names = evaluation_names(*split_frames(data_dir, split))
    if matrix_csv is not None:
        matrix = DistanceMatrix.read_csv(matrix_csv, dtype=np.float32)
        for what, found, expected in (("query", matrix.query_ids, query_names["id"].to_numpy()),
                                      ("gallery", matrix.gallery_ids, gallery_names["id"].to_numpy())):
            if len(found) != len(expected):
                raise InputError(f"{matrix_csv}: {len(found)} {what} ids, the {split} split has {len(expected)} {what} images")
            differ = np.flatnonzero(found != expected)
            if differ.size:
                at = int(differ[0])
                raise InputError(f"{matrix_csv}: {what} position {at} (0-based) has id {found[at]}, the {split} split's "
                                 f"{what} image there is {query_names['img_id'].iloc[at] if what == 'query' else gallery_names['img_id'].iloc[at]} "
                                 f"(id {expected[at]}): not a matrix of this split in evaluation order")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = output_dir / f"{split}_query_names.csv", output_dir / f"{split}_gallery_names.csv"
    query_names.to_csv(paths[0], index=False)
    gallery_names.to_csv(paths[1], index=False)
    return paths
