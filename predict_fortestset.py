"""Score a saved distance matrix: mAP, mINP and CMC rank-1/5/10 (allshots, cuhk03, market1501).

    python predict_fortestset.py --csv model_fuse/final.csv --data-dir data
    python predict_fortestset.py --csv submission.csv --truth data/synthetic_challenge_truth.csv

Test split (default): the CSV's ids are player ids; they are checked against the test split of
``<data-dir>/data_reid/train_df.csv`` in evaluation order (queries, then gallery, each sorted by player
and frame: ``reid.layout``) and any difference is reported. Challenge split (``--truth``): the CSV's ids are file
numbers, mapped to players with the synthetic twin's ground truth (columns img_id, img_type, player).
Queries have camera 0 and gallery items camera 1, as in the published evaluation; the cuhk03 CMC draws
from ``numpy.random.RandomState(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reid.errors import InputError, run_script
from reid.layout import GALLERY, QUERY, load_truth, split_frames
from reid.matrices import DistanceMatrix, id_mismatch
from reid.retrieval.metrics import evaluate


@dataclass
class Configuration:
    csv: Path
    """Distance matrix in the submission format (``.csv`` or ``.csv.gz``)."""
    data_dir: Path = Path("data")
    """Folder holding ``data_reid/train_df.csv`` (used for the test split)."""
    truth: Path | None = None
    """Challenge ground truth CSV (img_id, img_type, player): score a challenge-split matrix instead."""
    seed: int | None = 12345
    """Seed of the cuhk03 CMC's random gallery sampling; None draws from numpy's global state."""
    ranks: tuple[int, ...] = (1, 5, 10)
    """CMC ranks to print."""


def main(config: Configuration) -> None:
    matrix = DistanceMatrix.read_csv(config.csv, dtype=np.float32)  # float32 as the published script read it
    if config.truth is None:
        query_players, gallery_players = matrix.query_ids, matrix.gallery_ids
        problems = check_test_split_ids(matrix, *split_frames(config.data_dir, "test"))
        source = "test split"
    else:
        query_players, gallery_players, problems = challenge_players(matrix, load_truth(config.truth))
        source = f"challenge split, truth {config.truth}"
    if problems:
        raise InputError(f"{config.csv} does not match the {source}:\n  " + "\n  ".join(problems))
    rng = None if config.seed is None else np.random.RandomState(config.seed)
    scores = evaluate(matrix.values, query_players, gallery_players, rng=rng, topk=max(100, *config.ranks))
    print(f"{config.csv}: {matrix.shape[0]} queries x {matrix.shape[1]} gallery ({source})")
    print(scores.table(config.ranks))


def check_test_split_ids(matrix: DistanceMatrix, query: pd.DataFrame, gallery: pd.DataFrame) -> list[str]:
    """What differs between the matrix's ids and the test split's (query and gallery rows in
    evaluation order, ``reid.layout.split_frames``), in order; empty when they agree."""
    return [problem for what, found, rows in (("query", matrix.query_ids, query), ("gallery", matrix.gallery_ids, gallery))
            if (problem := id_mismatch(what, found, rows["player"].to_numpy(np.int64), "the CSV", "train_df's test split"))]


def challenge_players(matrix: DistanceMatrix, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Map the matrix's file numbers to players with the ground truth; also list what does not match."""
    problems = []
    players = []
    for what, kind, ids in (("query", QUERY, matrix.query_ids), ("gallery", GALLERY, matrix.gallery_ids)):
        part = truth[truth["img_type"] == kind].set_index("img_id")["player"]
        missing = np.setdiff1d(ids, part.index.to_numpy())
        unscored = np.setdiff1d(part.index.to_numpy(), ids)
        if missing.size:
            problems.append(f"{missing.size} {what} ids are not {what} images of the truth file, e.g. {missing[:5].tolist()}")
        if unscored.size:
            problems.append(f"{unscored.size} {what} images of the truth file are missing from the CSV, e.g. {unscored[:5].tolist()}")
        players.append(part.reindex(ids).fillna(-1).to_numpy(np.int64))
    return players[0], players[1], problems


if __name__ == "__main__":
    run_script(main, Configuration)
