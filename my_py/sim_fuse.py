"""Similarity fusion: the (weighted) mean of several distance matrices saved as submission CSVs.

    python my_py/sim_fuse.py --inputs a.csv b.csv c.csv --output fused_sim.csv
    python my_py/sim_fuse.py --inputs a.csv b.csv --weights 2 1 --output fused_sim.csv
    python my_py/sim_fuse.py --inputs fused_sim.csv fused_dissim.csv --output final.csv

Every input must have the same query ids and gallery ids in the same order (the error names the file
and the first differing position) and finite values only; the output must not be one of the inputs.
The mean is rounded to 5 decimals as the published script does, and the output is written in the
submission format (plus ``<output stem>.config.json``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import save_config  # noqa: E402
from reid.errors import InputError, run_script  # noqa: E402
from reid.matrices import DistanceMatrix, check_aligned, check_output_path  # noqa: E402
from reid.retrieval.fusion import similarity_fusion  # noqa: E402


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
    if config.weights is not None and len(config.weights) != len(config.inputs):
        raise InputError(f"--weights: {len(config.weights)} values for {len(config.inputs)} --inputs; give one weight per input")
    check_output_path(config.output, config.inputs)
    matrices = [DistanceMatrix.read_csv(path) for path in config.inputs]  # float64: the published sums exactly
    fused = matrices[0].with_values(similarity_fusion(check_aligned(matrices), weights=config.weights, decimals=config.decimals))
    fused.write_csv(config.output)
    save_config(config, config.output.with_name(Path(config.output.name.removesuffix(".gz")).stem + ".config.json"))
    print(f"similarity fusion of {len(matrices)} matrices ({fused.shape[0]} queries x {fused.shape[1]} gallery) -> {config.output}")


if __name__ == "__main__":
    run_script(main, Configuration)
