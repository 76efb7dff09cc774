"""The SynergyReID data layout every stage shares: folders, tables, evaluation order, splits (no torch).

::

    data_dir/data_reid/reid_training/{player}_{sequence}_{frame}.jpeg
                       reid_test/{query,gallery}/{player}_{sequence}_{frame}.jpeg
                       reid_challenge/{query,gallery}/{n}.jpeg
                       train_df.csv, challenge_df.csv                 (preprocess_data.py)
    data_dir/synthetic_challenge_truth.csv                            (the synthetic twin's challenge truth)

Image path of a table row = ``data_dir / "data_reid" / folder / f"{img_id}.jpeg"`` (both tables).
``train_df.csv``: ``TRAIN_COLUMNS`` (``split`` train / test, ``img_type`` q for frame 00 or the test
query folder, g otherwise, ``fold`` from GroupKFold by sequence); ``challenge_df.csv``:
``CHALLENGE_COLUMNS`` (``player`` = the file number). Evaluation order: the test split by (player,
frame), the challenge by file number; a split's matrix has one row per query and one column per
gallery image in that order. Every stage reads the tables and splits through this module; it needs
only pandas, so ``predict_fortestset.py`` runs without torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reid.errors import InputError

DATA_FOLDER = "data_reid"
TRAIN_FOLDER = "reid_training"
TEST_QUERY_FOLDER, TEST_GALLERY_FOLDER = "reid_test/query", "reid_test/gallery"
CHALLENGE_QUERY_FOLDER, CHALLENGE_GALLERY_FOLDER = "reid_challenge/query", "reid_challenge/gallery"
IMAGE_FOLDERS = (TRAIN_FOLDER, TEST_QUERY_FOLDER, TEST_GALLERY_FOLDER, CHALLENGE_QUERY_FOLDER, CHALLENGE_GALLERY_FOLDER)
IMAGE_SUFFIX = ".jpeg"
QUERY, GALLERY = "q", "g"  # img_type values

TRAIN_TABLE, CHALLENGE_TABLE = "train_df.csv", "challenge_df.csv"
TRAIN_COLUMNS = ("img_id", "folder", "player", "game", "split", "img_type", "fold")
CHALLENGE_COLUMNS = ("img_id", "folder", "player", "img_type")
TRUTH_NAME = "synthetic_challenge_truth.csv"  # beside data_reid/, not inside
TRUTH_COLUMNS = ("img_id", "img_type", "player")

SPLITS_TEXT = "test, challenge or fold<k> (e.g. fold3)"


def data_reid(data_dir: str | os.PathLike) -> Path:
    """The folder that holds the images and the tables: ``data_dir/data_reid``."""
    return Path(data_dir) / DATA_FOLDER


def relative_image_path(folder: str, img_id: str | int) -> str:
    """A row's image relative to data_dir: ``data_reid/<folder>/<img_id>.jpeg``."""
    return f"{DATA_FOLDER}/{folder}/{img_id}{IMAGE_SUFFIX}"


def image_path(data_dir: str | os.PathLike, folder: str, img_id: str | int) -> Path:
    """The file of one table row: ``data_dir/data_reid/folder/img_id.jpeg``."""
    return Path(data_dir) / relative_image_path(str(folder), img_id)


def image_paths(df: pd.DataFrame, data_dir: str | os.PathLike) -> list[Path]:
    """The image file of every row of ``df`` (columns ``folder``, ``img_id``), in row order."""
    return [image_path(data_dir, folder, img_id) for folder, img_id in zip(df["folder"], df["img_id"])]


def _read_table(path: Path, columns: tuple[str, ...], dtype: dict[str, type]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run download_data.py and preprocess_data.py first "
                                f"(or pass --data-dir, the folder that holds {DATA_FOLDER}/)")
    frame = pd.read_csv(path, dtype=dtype)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)} "
                         f"(write it again with preprocess_data.py)")
    return frame


def load_train_frame(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``data_dir/data_reid/train_df.csv`` (written by ``preprocess_data.py``) and check its columns."""
    return _read_table(data_reid(data_dir) / TRAIN_TABLE, TRAIN_COLUMNS, {"img_id": str, "folder": str})


def load_challenge_frame(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``data_dir/data_reid/challenge_df.csv`` (written by ``preprocess_data.py``) and check its columns."""
    return _read_table(data_reid(data_dir) / CHALLENGE_TABLE, CHALLENGE_COLUMNS, {"folder": str})


def split_train_test(df: pd.DataFrame, fold: int = -1, train_on_all: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``train_df.csv`` -> (training rows, held-out rows), as the paper's scripts split it.

    fold: -1 = the given ``split`` column (train / test); k >= 0 = cross-validation fold k held out.
    train_on_all: train on every row (test included); the held-out rows are then the test split,
    whose scores are no longer an unbiased estimate.
    """
    train, held_out = _split_masks(df, fold, train_on_all)
    if not train.any() or not held_out.any():
        raise InputError(f"empty split: {int(train.sum())} training rows, {int(held_out.sum())} held-out rows (fold={fold})")
    return df[train].reset_index(drop=True), df[held_out].reset_index(drop=True)


def held_out_rows(df: pd.DataFrame, fold: int = -1) -> pd.DataFrame:
    """The rows ``split_train_test`` holds out (what is evaluated), whether or not any are left to train on."""
    held_out = _split_masks(df, fold, False)[1]
    if not held_out.any():
        raise InputError(f"empty split: no held-out rows (fold={fold})")
    return df[held_out].reset_index(drop=True)


def _split_masks(df: pd.DataFrame, fold: int, train_on_all: bool) -> tuple[pd.Series, pd.Series]:
    if fold == -1:
        held_out, train = df["split"] == "test", df["split"] == "train"
    else:
        if fold not in set(df["fold"]):
            raise InputError(f"fold {fold} does not exist; folds in the data: {sorted(set(df['fold']))}")
        held_out, train = df["fold"] == fold, df["fold"] != fold
    if train_on_all:
        train, held_out = pd.Series(True, index=df.index), df["split"] == "test"
    return train, held_out


def sort_for_evaluation(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in evaluation order: test-style names ``{player}_{sequence}_{frame}`` by (player, frame,
    name); challenge-style numeric names by number."""
    names = df["img_id"].astype(str)
    if names.str.fullmatch(r"\d+").all():
        key = names.astype(np.int64)
        return df.assign(_key=key).sort_values("_key", kind="stable").drop(columns="_key").reset_index(drop=True)
    frame = names.str.rsplit("_", n=1).str[-1].astype(np.int64)
    return (df.assign(_frame=frame, _name=names).sort_values(["player", "_frame", "_name"], kind="stable")
            .drop(columns=["_frame", "_name"]).reset_index(drop=True))


def query_gallery(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out rows -> (query rows, gallery rows), each in evaluation order (``img_type`` q / g)."""
    ordered = sort_for_evaluation(df)
    query = ordered[ordered["img_type"] == QUERY].reset_index(drop=True)
    gallery = ordered[ordered["img_type"] == GALLERY].reset_index(drop=True)
    if query.empty or gallery.empty:
        raise InputError(f"need query and gallery images, got {len(query)} queries and {len(gallery)} gallery images")
    return query, gallery


def split_frames(data_dir: str | os.PathLike, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(query rows, gallery rows) of ``split`` in evaluation order: ``test`` (the test rows of
    ``train_df.csv``; ids are player ids), ``challenge`` (``challenge_df.csv``; ids are file numbers)
    or ``fold<k>`` (cross-validation fold k of ``train_df.csv``, as ``train_our_post.py --fold k``
    holds it out). The ids of a split's matrix are the rows' ``player`` column."""
    if split == "challenge":
        return query_gallery(load_challenge_frame(data_dir))
    if split == "test":
        return query_gallery(held_out_rows(load_train_frame(data_dir), fold=-1))
    if split.startswith("fold") and split[4:].isdigit():
        return query_gallery(held_out_rows(load_train_frame(data_dir), fold=int(split[4:])))
    raise InputError(f"unknown split {split!r}; expected {SPLITS_TEXT}")


def held_out_split(fold: int, train_on_all: bool) -> str:
    """The split a run with these settings was evaluated on during training: ``test`` or ``fold<k>``."""
    return "test" if fold == -1 or train_on_all else f"fold{fold}"


def read_table(path: str | os.PathLike, flag: str, **read_csv: Any) -> pd.DataFrame:
    """``pd.read_csv(path, **read_csv)`` of a table the user gave with ``flag``: one that cannot be parsed
    raises ``InputError`` naming the flag and the file (a missing one ``FileNotFoundError``)."""
    try:
        return pd.read_csv(path, compression="infer", **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise InputError(f"{flag} {path}: not a readable CSV table ({str(error).splitlines()[0]})") from None


def load_truth(path: str | os.PathLike) -> pd.DataFrame:
    """A challenge ground truth (``TRUTH_COLUMNS``: img_id = file number, img_type q / g, player; one
    row per image, as the synthetic twin writes it), checked: ``InputError`` naming the file."""
    path = Path(path)
    truth = read_table(path, "--truth")
    missing = [column for column in TRUTH_COLUMNS if column not in truth.columns]
    if missing:
        raise InputError(f"--truth {path}: missing column(s) {', '.join(missing)}; the ground truth has the columns "
                         f"{', '.join(TRUTH_COLUMNS)} (as download_data.py --source synthetic writes it)")
    for column in ("img_id", "player"):
        if not pd.api.types.is_integer_dtype(truth[column]):
            raise InputError(f"--truth {path}: column {column} must hold integers, found e.g. {truth[column].iloc[0]!r}")
    types = set(truth["img_type"].astype(str))
    if not types <= {QUERY, GALLERY}:
        raise InputError(f"--truth {path}: column img_type must be q or g, found {sorted(types - {QUERY, GALLERY})}")
    repeated = truth[truth.duplicated(["img_type", "img_id"])]
    if len(repeated):
        kind, number = repeated.iloc[0][["img_type", "img_id"]]
        count = int(((truth["img_type"] == kind) & (truth["img_id"] == number)).sum())
        raise InputError(f"--truth {path}: image {number} ({kind}) has {count} rows; the ground truth has one row per image")
    return truth
