"""Dissimilarity fusion: per-query weights from top-k agreement between models (the paper's rank fusion).

    python my_py/dissim_fuse.py --inputs a.csv b.csv c.csv --output fused_dissim.csv
    python my_py/dissim_fuse.py --inputs a.csv b.csv c.csv --topk 10 --output fused_dissim.csv

For each query, the columns in at least M // 2 + 1 models' top-k are "agreed"; a model's weight is its
share of them (0.1 if none; uniform when no column is agreed), then inverted so that the models that
agree more weigh less, as the published ``dissim_fuse.py`` computes it. Inputs are given in this order
(the published script took the directory listing's order); they must hold finite values only, and
the output must not be one of them. Output in the submission format, plus ``<output stem>.config.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import save_config  # noqa: E402
from reid.errors import InputError, run_script  # noqa: E402
from reid.matrices import DistanceMatrix, check_aligned, check_output_path  # noqa: E402
from reid.retrieval.fusion import dissimilarity_fusion, dissimilarity_weights  # noqa: E402


@dataclass
class Configuration:
    inputs: list[Path]
    """Distance CSVs in the submission format (``.csv`` or ``.csv.gz``), one per model, in weight order."""
    output: Path
    """Where to write the fused CSV (a ``.gz`` suffix compresses it)."""
    topk: int = 15
    """How many nearest gallery columns of each model take part in the agreement count (at least 1)."""
    decimals: int | None = 5
    """Round the result to this many decimals as the published script does; None keeps every digit."""


def main(config: Configuration) -> None:
    if config.topk < 1:
        raise InputError(f"--topk {config.topk}: must be at least 1 (the nearest gallery columns of each model that are compared)")
    check_output_path(config.output, config.inputs)
    matrices = [DistanceMatrix.read_csv(path) for path in config.inputs]  # float64: the published sums exactly
    values = check_aligned(matrices)
    weights = dissimilarity_weights(values, topk=config.topk)
    fused = matrices[0].with_values(dissimilarity_fusion(values, topk=config.topk, decimals=config.decimals, weights=weights))
    fused.write_csv(config.output)
    save_config(config, config.output.with_name(Path(config.output.name.removesuffix(".gz")).stem + ".config.json"))
    print(f"dissimilarity fusion of {len(matrices)} matrices ({fused.shape[0]} queries x {fused.shape[1]} gallery) -> {config.output}")
    print(f"  model weights set uniform (no agreed column for the query): {weights.inter0_cnt}")
    print(f"  model weights at the 0.1 floor (the model shared no agreed column): {weights.cnt2}")
    print(f"  mean weight per model: {' '.join(f'{w:.3f}' for w in weights.weights.mean(0))}")


if __name__ == "__main__":
    run_script(main, Configuration)
