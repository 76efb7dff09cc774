"""Intra- vs inter-player distances of saved features: a statistics table and a histogram.

    python my_py/cal_feadist.py --features outputs/predictions/<model>/features_test.npz
    python my_py/cal_feadist.py --features outputs/predictions/<model>/features_test.npz --pairs query-gallery
    python my_py/cal_feadist.py --features outputs/predictions/<model>/features_test.npz --metric euclidean --output-dir outputs/stats

Reads a features file of predict.py (``.npz``; keys in reid/features.py) and measures the distance of
every pair of images (``--pairs all``), of queries only, of gallery images only, or of each query
with each gallery image (what the ranking sees). Same-player pairs are "intra", different-player
pairs "inter". Outputs beside the features (or in --output-dir), named <features stem>_<pairs>_feadist:
  .csv   count, mean, std, min, 5 % / median / 95 %, max of the intra and the inter distances
  .json  the separation AUC (chance that a same-player pair is closer than a different-player pair),
         d' = (mean inter - mean intra) / pooled std, and this configuration
  .png   the two distance histograms
Memory stays O(block x N): any number of images works. Challenge features (no identities) are refused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import config_to_dict  # noqa: E402
from reid.errors import InputError, run_script  # noqa: E402
from reid.feature_stats import Metric, PairDistances, pair_distances  # noqa: E402
from reid.features import FeatureSet  # noqa: E402
from reid.files import write_text_atomically  # noqa: E402
from reid.plots import plot_distance_histograms  # noqa: E402


@dataclass
class Configuration:
    features: Path
    """A features file of predict.py (<output_dir>/<model>/features_<split>.npz)."""
    output_dir: Path | None = None
    """Where the table (CSV) and histogram (PNG) go; None = beside the features file."""
    pairs: Literal["all", "query", "gallery", "query-gallery"] = "all"
    """Pairs measured: every pair of images, of queries, of gallery images, or each query with each gallery image."""
    metric: Metric = "squared_euclidean"
    """Distance: squared_euclidean (the project's), euclidean (the published script's) or cosine (1 - cos)."""
    bins: int = 2000
    """Histogram bins (the quantiles and the AUC are exact to one bin: 4 / bins for squared_euclidean)."""


def main(config: Configuration) -> pd.DataFrame:
    features = FeatureSet.load(config.features)
    if features.split == "challenge":
        raise InputError(f"{config.features}: challenge features are anonymous (no player ids); use test features")
    if config.pairs == "query-gallery":
        query, gallery = features.query, features.gallery
        stats = pair_distances(query.features, query.player, gallery.features, gallery.player,
                               metric=config.metric, bins=config.bins)
    else:
        chosen = features if config.pairs == "all" else features.subset(features.img_type == config.pairs[0])
        stats = pair_distances(chosen.features, chosen.player, metric=config.metric, bins=config.bins)

    output_dir = config.output_dir or config.features.parent
    stem = f"{config.features.stem}_{config.pairs}_feadist"
    table = stats.table()
    notes = summary_lines(stats)
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / f"{stem}.csv", index=False, float_format="%.6g")
    summary = {"auc": stats.auc(), "d_prime": stats.d_prime(), "config": config_to_dict(config)}
    write_text_atomically(output_dir / f"{stem}.json", json.dumps(summary, indent=2) + "\n")
    plot_distance_histograms(stats.edges, stats.counts["intra"], stats.counts["inter"], output_dir / f"{stem}.png",
                             xlabel=config.metric.replace("_", " ") + " distance", notes=notes,
                             title=f"{config.features.name}: {config.pairs} pairs")
    print(f"{config.features} ({features.split}, {config.pairs} pairs, {config.metric} distance)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(notes))
    print(f"-> {output_dir / stem}.csv, .json, .png")
    return table


def summary_lines(stats: PairDistances) -> list[str]:
    return [f"separation AUC {stats.auc():.4f} (P[intra pair closer than inter pair])",
            f"d' {stats.d_prime():.3f} ((mean inter - mean intra) / pooled std)"]


if __name__ == "__main__":
    run_script(main, Configuration)
