"""Similarity fusion: the (weighted) mean of several distance matrices saved as submission CSVs.

    python my_py/sim_fuse.py --inputs a.csv b.csv c.csv --output fused_sim.csv
    python my_py/sim_fuse.py --inputs a.csv b.csv --weights 2 1 --output fused_sim.csv
    python my_py/sim_fuse.py --inputs fused_sim.csv fused_dissim.csv --output final.csv

Every input must have the same query ids and gallery ids in the same order (the error names the file
and the first differing position). The mean is rounded to 5 decimals as the published script does,
and the output is written in the submission format (plus ``<output stem>.config.json``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import parse, save_config  # noqa: E402
from reid.fusion import similarity_fusion  # noqa: E402
from reid.matrices import DistanceMatrix  # noqa: E402


@dataclass
class Configuration:
    inputs: list[Path]
    """Distance CSVs in the submission format (``.csv`` or ``.csv.gz``), one per model."""
    output: Path
    """Where to write the fused CSV (a ``.gz`` suffix compresses it)."""
    weights: list[float] | None = None
    """One non-negative weight per input; None = the plain mean (the published script)."""
    decimals: int | None = 5
    """Round the mean to this many decimals as the published script does; None keeps every digit."""


def main(config: Configuration) -> None:
    matrices = [DistanceMatrix.read_csv(path) for path in config.inputs]  # float64: the published sums exactly
    fused = similarity_fusion(matrices, weights=config.weights, decimals=config.decimals)
    fused.write_csv(config.output)
    save_config(config, config.output.with_name(Path(config.output.name.removesuffix(".gz")).stem + ".config.json"))
    print(f"similarity fusion of {len(matrices)} matrices ({fused.shape[0]} queries x {fused.shape[1]} gallery) -> {config.output}")


if __name__ == "__main__":
    try:
        main(parse(Configuration))
    except (ValueError, OSError) as error:  # a bad or missing input file: say which and where, no traceback
        sys.exit(f"error: {error}")
