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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reid.errors import InputError, run_script
from reid.matrices import DistanceMatrix
from reid.metrics import evaluate

TRUTH_COLUMNS = ("img_id", "img_type", "player")


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
        problems = check_test_split_ids(matrix, read_train_table(config.data_dir))
        source = "test split"
    else:
        query_players, gallery_players, problems = challenge_players(matrix, read_truth(config.truth))
        source = f"challenge split, truth {config.truth}"
    if problems:
        raise InputError(f"{config.csv} does not match the {source}:\n  " + "\n  ".join(problems))
    rng = None if config.seed is None else np.random.RandomState(config.seed)
    scores = evaluate(matrix.values, query_players, gallery_players, rng=rng, topk=max(100, *config.ranks))
    print(f"{config.csv}: {matrix.shape[0]} queries x {matrix.shape[1]} gallery ({source})")
    print(scores.table(config.ranks))


def read_train_table(data_dir: Path) -> pd.DataFrame:
    """``data_dir/data_reid/train_df.csv`` (pandas only: this script needs no torch), with the columns used here."""
    path = data_dir / "data_reid" / "train_df.csv"
    if not path.is_file():
        raise InputError(f"{path} not found: run preprocess_data.py first, or pass --data-dir (the folder that holds data_reid/)")
    table = pd.read_csv(path, dtype={"img_id": str})
    missing = [column for column in ("img_id", "player", "split", "img_type") if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; write it again with preprocess_data.py")
    return table


def read_truth(path: Path) -> pd.DataFrame:
    """The challenge ground truth (columns img_id, img_type, player; one row per image), checked: ``InputError`` naming the file."""
    try:
        truth = pd.read_csv(path, compression="infer")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise InputError(f"--truth {path}: not a readable CSV table ({str(error).splitlines()[0]})") from None
    missing = [column for column in TRUTH_COLUMNS if column not in truth.columns]
    if missing:
        raise InputError(f"--truth {path}: missing column(s) {', '.join(missing)}; the ground truth has the columns "
                         f"{', '.join(TRUTH_COLUMNS)} (as download_data.py --source synthetic writes it)")
    for column in ("img_id", "player"):
        if not pd.api.types.is_integer_dtype(truth[column]):
            raise InputError(f"--truth {path}: column {column} must hold integers, found e.g. {truth[column].iloc[0]!r}")
    types = set(truth["img_type"].astype(str))
    if not types <= {"q", "g"}:
        raise InputError(f"--truth {path}: column img_type must be q or g, found {sorted(types - {'q', 'g'})}")
    repeated = truth[truth.duplicated(["img_type", "img_id"])]
    if len(repeated):
        kind, number = repeated.iloc[0][["img_type", "img_id"]]
        count = int(((truth["img_type"] == kind) & (truth["img_id"] == number)).sum())
        raise InputError(f"--truth {path}: image {number} ({kind}) has {count} rows; the ground truth has one row per image")
    return truth


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
    run_script(main, Configuration)
