"""Which image each row and column of a saved challenge matrix is: name_test.py with --split challenge.

    python my_py/name_challenge.py --data-dir data
    python my_py/name_challenge.py --data-dir data --output-dir outputs/names --matrix outputs/predictions/<model>/challenge_hard.csv

Writes <output_dir>/challenge_query_names.csv and challenge_gallery_names.csv (rows and columns of a
challenge matrix, sorted by file number; ids: file numbers); every flag and output is name_test.py's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))  # name_test.py, beside this file

import name_test  # noqa: E402

from reid.errors import run_script  # noqa: E402


@dataclass
class Configuration(name_test.Configuration):
    split: Literal["test", "challenge"] = "challenge"
    """The split the matrix is of: challenge (ids are file numbers)."""


main = name_test.main

if __name__ == "__main__":
    run_script(main, Configuration)
