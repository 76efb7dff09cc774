"""Image folders -> the two DataFrames every later stage reads (the preprocess stage's logic).

``training_frame`` lists ``reid_training`` and ``reid_test/{query,gallery}`` (names
``{player}_{sequence}_{frame}.jpeg``) with cross-validation folds grouped by sequence;
``challenge_frame`` lists ``reid_challenge/{query,gallery}`` (anonymous ``{n}.jpeg``, n written
without leading zeros: the later stages find an image by its number). Both check the folders and
every file name, and stop at the first problem with the path and what was expected; two training
or test files for the same player, sequence and frame (``060_10_01.jpeg`` beside ``60_10_01.jpeg``)
are refused by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from sklearn.model_selection import GroupKFold

from reid.errors import InputError
from reid.layout import (
    CHALLENGE_COLUMNS,
    CHALLENGE_GALLERY_FOLDER,
    CHALLENGE_QUERY_FOLDER,
    GALLERY,
    QUERY,
    TEST_GALLERY_FOLDER,
    TEST_QUERY_FOLDER,
    TRAIN_COLUMNS,
    TRAIN_FOLDER,
)

# folder -> (split, img_type: None = by frame, q for frame 00)
TRAIN_FOLDERS = {TRAIN_FOLDER: ("train", None), TEST_QUERY_FOLDER: ("test", QUERY), TEST_GALLERY_FOLDER: ("test", GALLERY)}
CHALLENGE_FOLDERS = {CHALLENGE_QUERY_FOLDER: QUERY, CHALLENGE_GALLERY_FOLDER: GALLERY}
TRAIN_PATTERN = re.compile(r"(\d+)_(\d+)_(\d{2})\.jpeg")
TRAIN_PATTERN_TEXT = "{player}_{sequence}_{frame}.jpeg with integers and a two-digit frame, e.g. 123_4_05.jpeg"
CHALLENGE_PATTERN = re.compile(r"(0|[1-9]\d*)\.jpeg")
CHALLENGE_PATTERN_TEXT = "{n}.jpeg with an integer n written without leading zeros, e.g. 42.jpeg"


class CatalogError(InputError):
    """An image folder is missing or empty, or a file name does not fit the expected pattern."""


def _image_names(folder: Path, pattern: re.Pattern[str], pattern_text: str) -> list[re.Match[str]]:
    """Match every file name of ``folder`` (hidden files such as .DS_Store are skipped)."""
    if not folder.is_dir():
        raise CatalogError(f"{folder}: folder not found; expected image files named {pattern_text}")
    names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    if not names:
        raise CatalogError(f"{folder}: empty folder; expected image files named {pattern_text}")
    matches = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None and pattern is CHALLENGE_PATTERN and re.fullmatch(r"\d+\.jpeg", name):
            number = int(name.removesuffix(".jpeg"))
            raise CatalogError(f"{folder / name}: a challenge file number with leading zeros (the later stages look for "
                               f"{number}.jpeg); rename it {number}.jpeg")
        if match is None:
            raise CatalogError(f"{folder / name}: file name does not fit the pattern {pattern_text}")
        matches.append(match)
    return matches


def training_frame(data_reid: str | os.PathLike, n_folds: int = 10) -> pd.DataFrame:
    """Training and test images as one DataFrame, with GroupKFold folds grouped by sequence.

    Columns: img_id (file stem, str), folder, player (int), game (``train_<seq>`` / ``test_<seq>``),
    split (train / test), img_type (q: frame 00 in training, the query folder in test; g otherwise),
    fold (int in [0, n_folds)). Rows sorted by split, folder, player, sequence, frame.
    """
    data_reid = Path(data_reid)
    rows = []
    for folder, (split, folder_type) in TRAIN_FOLDERS.items():
        for match in _image_names(data_reid / folder, TRAIN_PATTERN, TRAIN_PATTERN_TEXT):
            player, sequence, frame = (int(g) for g in match.groups())
            img_type = folder_type or (QUERY if frame == 0 else GALLERY)
            rows.append((match.group(0)[: -len(".jpeg")], folder, player, f"{split}_{sequence}", split, img_type, sequence, frame))
    frame = pd.DataFrame(rows, columns=[*TRAIN_COLUMNS[:-1], "sequence", "frame"])
    _check_unique(frame, data_reid)
    _check_disjoint(frame, data_reid)
    frame = frame.sort_values(["split", "folder", "player", "sequence", "frame"], ascending=[False, False, True, True, True])
    frame = frame.drop(columns=["sequence", "frame"]).reset_index(drop=True)
    frame["fold"] = assign_folds(frame["game"], n_folds)
    return frame[list(TRAIN_COLUMNS)]


def _check_unique(frame: pd.DataFrame, data_reid: Path) -> None:
    """One file per (player, sequence, frame): ``060_10_01.jpeg`` and ``60_10_01.jpeg`` are the same image's name."""
    repeated = frame[frame.duplicated(["player", "sequence", "frame"], keep=False)]
    if repeated.empty:
        return
    first = repeated.iloc[0]
    same = repeated[(repeated.player == first.player) & (repeated.sequence == first.sequence) & (repeated.frame == first.frame)]
    files = " and ".join(str(data_reid / folder / f"{img_id}.jpeg") for folder, img_id in zip(same.folder, same.img_id))
    others = repeated.groupby(["player", "sequence", "frame"]).ngroups - 1
    raise CatalogError(f"{files} are the same player {first.player}, sequence {first.sequence}, frame {first.frame:02d}; "
                       f"keep one of them{f' ({others} more such image(s))' if others else ''}")


def _check_disjoint(frame: pd.DataFrame, data_reid: Path) -> None:
    train = set(frame.player[frame.split == "train"])
    test = set(frame.player[frame.split == "test"])
    both = sorted(train & test)
    if both:
        raise CatalogError(
            f"{data_reid}: player ids {both[:10]}{' ...' if len(both) > 10 else ''} appear in both reid_training and "
            f"reid_test; expected disjoint identities"
        )
    queries = set(frame.player[frame.folder == TEST_QUERY_FOLDER])
    gallery = set(frame.player[frame.folder == TEST_GALLERY_FOLDER])
    lonely = sorted(queries - gallery)
    if lonely:
        raise CatalogError(f"{data_reid / TEST_QUERY_FOLDER}: query players {lonely[:10]} have no image in {TEST_GALLERY_FOLDER}")


def assign_folds(groups: pd.Series, n_folds: int) -> pd.Series:
    """Fold of each row from sklearn's GroupKFold: every group (sequence) lands in exactly one fold."""
    n_groups = groups.nunique()
    if n_folds < 2 or n_folds > n_groups:
        raise CatalogError(f"n_folds={n_folds}: expected between 2 and the number of sequences ({n_groups})")
    folds = pd.Series(-1, index=groups.index, dtype=int)
    for fold, (_, held_out) in enumerate(GroupKFold(n_splits=n_folds).split(groups, groups=groups)):
        folds.iloc[held_out] = fold
    return folds


def challenge_frame(data_reid: str | os.PathLike) -> pd.DataFrame:
    """Challenge images: columns img_id (int, the file number), folder, player (= img_id), img_type (q / g).

    Queries first, then gallery, each in numeric order (the evaluation order).
    """
    data_reid = Path(data_reid)
    rows = []
    for folder, img_type in CHALLENGE_FOLDERS.items():
        numbers = sorted(int(m.group(1)) for m in _image_names(data_reid / folder, CHALLENGE_PATTERN, CHALLENGE_PATTERN_TEXT))
        rows.extend((n, folder, n, img_type) for n in numbers)
    return pd.DataFrame(rows, columns=list(CHALLENGE_COLUMNS))


def count_table(train: pd.DataFrame, challenge: pd.DataFrame) -> pd.DataFrame:
    """ids and images per subset, as the challenge toolkit prints them.

    Challenge images are anonymous, so there each image counts as its own id (as in the toolkit).
    """
    subsets = [
        ("train", train[train.split == "train"]),
        ("query test", train[train.folder == TEST_QUERY_FOLDER]),
        ("gallery test", train[train.folder == TEST_GALLERY_FOLDER]),
        ("traintest", train),
        ("query challenge", challenge[challenge.img_type == QUERY]),
        ("gallery challenge", challenge[challenge.img_type == GALLERY]),
    ]
    return pd.DataFrame([(name, rows.player.nunique(), len(rows)) for name, rows in subsets], columns=["subset", "ids", "images"])


def format_count_table(table: pd.DataFrame) -> str:
    """The count table as aligned text: ``subset | # ids | # images``."""
    width = max(len(s) for s in table.subset)
    lines = [f"  {'subset':<{width}} | # ids | # images", "  " + "-" * (width + 19)]
    for row in table.itertuples():
        lines.append(f"  {row.subset:<{width}} | {row.ids:5d} | {row.images:8d}")
    return "\n".join(lines)
