"""Image folders -> DATA_DIR/data_reid/train_df.csv and challenge_df.csv, and the count table.

    python preprocess_data.py                          # data/data_reid
    python preprocess_data.py --data-dir demo_out/data --n-folds 5
    python preprocess_data.py --verify-images          # also decode every image first (parallel)

train_df.csv: img_id, folder, player, game, split, img_type, fold (GroupKFold by sequence) for the
training and test images; challenge_df.csv: img_id, folder, player, img_type for the challenge images.
A missing or empty folder, a file name that does not fit the pattern (or a challenge number with
leading zeros), two files for the same player, sequence and frame, or (with --verify-images) any
unreadable or empty image stops with the files named and exit status 2; no table is written then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reid.catalog import challenge_frame, count_table, format_count_table, training_frame
from reid.config import save_config
from reid.errors import InputError, run_script
from reid.files import atomic_path
from reid.images import unreadable_images
from reid.layout import CHALLENGE_TABLE, TRAIN_TABLE, data_reid, image_paths


@dataclass
class Configuration:
    """List the SynergyReID images into the DataFrames the other stages read."""

    data_dir: Path = Path("data")
    """Folder that holds data_reid/."""
    n_folds: int = 10
    """Cross-validation folds (GroupKFold over sequences) written to the fold column."""
    verify_images: bool = False
    """Decode every image before writing the tables, and stop listing every unreadable or empty one."""
    workers: int | None = None
    """Threads decoding images for --verify-images; None: one per CPU core."""


def main(config: Configuration) -> None:
    folder = data_reid(config.data_dir)
    train = training_frame(folder, n_folds=config.n_folds)
    challenge = challenge_frame(folder)
    if config.verify_images:
        verify_images([*image_paths(train, config.data_dir), *image_paths(challenge, config.data_dir)], config.workers)
    for frame, name in ((train, TRAIN_TABLE), (challenge, CHALLENGE_TABLE)):
        write_csv(frame, folder / name)
    save_config(config, folder / "preprocess_config.json")
    print("SynergyReID images")
    print(format_count_table(count_table(train, challenge)))
    print(f"{train.game.nunique()} sequences in {config.n_folds} folds")
    print(f"wrote {folder / TRAIN_TABLE} ({len(train):,} rows) and {folder / CHALLENGE_TABLE} ({len(challenge):,} rows)")


def verify_images(paths: list[Path], workers: int | None) -> None:
    """Decode every image; ``InputError`` listing each unreadable or empty one (all of them, one per line)."""
    problems = unreadable_images(paths, workers=workers)
    if problems:
        raise InputError(f"{len(problems)} of {len(paths):,} images cannot be read; replace or remove them, "
                         f"then run preprocess_data.py again:\n" + "\n".join(f"  {path}: {reason}" for path, reason in problems))
    print(f"verified {len(paths):,} images: every one decodes")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV through a temporary file, so an interrupted run never leaves half a table."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


if __name__ == "__main__":
    run_script(main, Configuration)
