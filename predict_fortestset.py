"""Score a saved distance matrix: mAP, mINP and CMC rank-1/5/10 (allshots, cuhk03, market1501).

    python predict_fortestset.py --csv model_fuse/final.csv --data-dir data
    python predict_fortestset.py --csv submission.csv --truth data/synthetic_challenge_truth.csv

Test split (default): the CSV's ids are player ids; they are checked against the test split of
``<data-dir>/data_reid/train_df.csv`` in evaluation order (queries, then gallery, each sorted by player
and frame) and any difference is reported. Challenge split (``--truth``): the CSV's ids are file
numbers, mapped to players with the synthetic twin's ground truth (columns img_id, img_type, player).
Queries have camera 0 and gallery items camera 1, as in the published evaluation; the cuhk03 CMC draws
from ``numpy.random.RandomState(seed)``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reid.config import parse
from reid.matrices import DistanceMatrix
from reid.metrics import evaluate


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
        problems = check_test_split_ids(matrix, pd.read_csv(config.data_dir / "data_reid" / "train_df.csv"))
        source = "test split"
    else:
        query_players, gallery_players, problems = challenge_players(matrix, pd.read_csv(config.truth))
        source = f"challenge split, truth {config.truth}"
    if problems:
        sys.exit(f"error: {config.csv} does not match the {source}:\n  " + "\n  ".join(problems))
    rng = None if config.seed is None else np.random.RandomState(config.seed)
    scores = evaluate(matrix.values, query_players, gallery_players, rng=rng, topk=max(100, *config.ranks))
    print(f"{config.csv}: {matrix.shape[0]} queries x {matrix.shape[1]} gallery ({source})")
    print(scores.table(config.ranks))


def split_players_in_order(train_df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Player ids of the test split's queries and gallery items in evaluation order (player, then frame)."""
    test = train_df[train_df["split"] == "test"]
    frame = test["img_id"].astype(str).str.rsplit("_", n=1).str[-1].astype(int)
    test = test.assign(frame=frame).sort_values(["player", "frame"], kind="stable")
    is_query = test["img_type"] == "q"
    return test.loc[is_query, "player"].to_numpy(np.int64), test.loc[~is_query, "player"].to_numpy(np.int64)


def check_test_split_ids(matrix: DistanceMatrix, train_df: pd.DataFrame) -> list[str]:
    """What differs between the matrix's ids and the test split's, in order (empty when they agree)."""
    expected_query, expected_gallery = split_players_in_order(train_df)
    return [problem for problem in (
        _difference("query", matrix.query_ids, expected_query, "train_df's test split"),
        _difference("gallery", matrix.gallery_ids, expected_gallery, "train_df's test split"),
    ) if problem]


def challenge_players(matrix: DistanceMatrix, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Map the matrix's file numbers to players with the ground truth; also list what does not match."""
    problems = []
    players = []
    for what, kind, ids in (("query", "q", matrix.query_ids), ("gallery", "g", matrix.gallery_ids)):
        part = truth[truth["img_type"] == kind].set_index("img_id")["player"]
        missing = np.setdiff1d(ids, part.index.to_numpy())
        unscored = np.setdiff1d(part.index.to_numpy(), ids)
        if missing.size:
            problems.append(f"{missing.size} {what} ids are not {what} images of the truth file, e.g. {missing[:5].tolist()}")
        if unscored.size:
            problems.append(f"{unscored.size} {what} images of the truth file are missing from the CSV, e.g. {unscored[:5].tolist()}")
        players.append(part.reindex(ids).fillna(-1).to_numpy(np.int64))
    return players[0], players[1], problems


def _difference(what: str, found: np.ndarray, expected: np.ndarray, where: str) -> str | None:
    if np.array_equal(found, expected):
        return None
    text = f"{what} ids: the CSV has {len(found)}, {where} has {len(expected)}"
    common = min(len(found), len(expected))
    differ = np.flatnonzero(found[:common] != expected[:common])
    if differ.size:
        at = int(differ[0])
        text += f"; first difference at {what} position {at} (0-based): CSV {found[at]}, expected {expected[at]}"
    only_csv, only_expected = np.setdiff1d(found, expected), np.setdiff1d(expected, found)
    if only_csv.size:
        text += f"; ids only in the CSV: {only_csv[:5].tolist()}"
    if only_expected.size:
        text += f"; ids only in {where}: {only_expected[:5].tolist()}"
    return text


if __name__ == "__main__":
    try:
        main(parse(Configuration))
    except (ValueError, OSError) as error:  # a bad or missing input file: say which and where, no traceback
        sys.exit(f"error: {error}")
