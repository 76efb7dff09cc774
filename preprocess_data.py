"""Image folders -> DATA_DIR/data_reid/train_df.csv and challenge_df.csv, and the count table.

    python preprocess_data.py                          # data/data_reid
    python preprocess_data.py --data-dir demo_out/data --n-folds 5

train_df.csv: img_id, folder, player, game, split, img_type, fold (GroupKFold by sequence) for the
training and test images; challenge_df.csv: img_id, folder, player, img_type for the challenge images.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reid.catalog import CatalogError, challenge_frame, count_table, format_count_table, training_frame
from reid.config import parse, save_config
from reid.download import DATA_FOLDER


@dataclass
class Configuration:
    """List the SynergyReID images into the DataFrames the other stages read."""

    data_dir: Path = Path("data")
    """Folder that holds data_reid/."""
    n_folds: int = 10
    """Cross-validation folds (GroupKFold over sequences) written to the fold column."""


def main(config: Configuration) -> None:
    data_reid = config.data_dir / DATA_FOLDER
    try:
        train = training_frame(data_reid, n_folds=config.n_folds)
        challenge = challenge_frame(data_reid)
    except CatalogError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for frame, name in ((train, "train_df.csv"), (challenge, "challenge_df.csv")):
        write_csv(frame, data_reid / name)
    save_config(config, data_reid / "preprocess_config.json")
    print("SynergyReID images")
    print(format_count_table(count_table(train, challenge)))
    print(f"{train.game.nunique()} sequences in {config.n_folds} folds")
    print(f"wrote {data_reid / 'train_df.csv'} ({len(train):,} rows) and {data_reid / 'challenge_df.csv'} ({len(challenge):,} rows)")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV through a temporary file, so an interrupted run never leaves half a table."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


if __name__ == "__main__":
    main(parse(Configuration))
