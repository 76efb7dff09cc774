"""Which image each row and column of a saved matrix is: two CSVs of image names in matrix order.

    python my_py/name_test.py --data-dir data
    python my_py/name_test.py --data-dir data --output-dir outputs/names --matrix outputs/predictions/<model>/test_hard.csv
    python my_py/name_test.py --split challenge --matrix outputs/predictions/<model>/challenge_hard.csv   # = name_challenge.py

Matrices of predict.py (and the fused ones) follow the split's evaluation order: rows are the
queries, columns the gallery images, each sorted by (player, frame) on the test split (ids: player
ids) and by file number on the challenge (ids: file numbers). Writes
<output_dir>/<split>_query_names.csv and <split>_gallery_names.csv with columns index (0-based row /
column), id (the id written in the matrix CSV), img_id (file stem) and path (relative to data_dir).
With --matrix, first checks that the matrix's ids are those, in order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.errors import run_script  # noqa: E402
from reid.prediction import write_split_names  # noqa: E402


@dataclass
class Configuration:
    split: Literal["test", "challenge"] = "test"
    """The split the matrix is of: test (ids are player ids) or challenge (ids are file numbers)."""
    data_dir: Path = Path("data")
    """Folder that holds data_reid/ (with the CSVs of preprocess_data.py)."""
    output_dir: Path = Path("outputs/names")
    """Where <split>_query_names.csv and <split>_gallery_names.csv go."""
    matrix: Path | None = None
    """A saved matrix of the split (submission CSV) to check against the names first; None = no check."""


def main(config: Configuration) -> tuple[Path, Path]:
    paths = write_split_names(config.data_dir, config.split, config.output_dir, config.matrix)
    print(f"{config.split} rows (queries) -> {paths[0]}; columns (gallery) -> {paths[1]}"
          + (f"; {config.matrix} matches them" if config.matrix else ""))
    return paths


if __name__ == "__main__":
    run_script(main, Configuration)
