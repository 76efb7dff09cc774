"""t-SNE map of saved features, one colour per player: does the model group each player's images?

    python my_py/plot_fea.py --features outputs/predictions/<model>/features_test.npz
    python my_py/plot_fea.py --features outputs/predictions/<model>/features_test.npz --images query --output tsne_query.png
    python my_py/plot_fea.py --features outputs/predictions/<model>/features_challenge.npz --max-images 3000

Reads a features file of predict.py (``.npz``; keys in reid/features.py). Queries are drawn as stars,
gallery images as dots, each player's id at the centre of its points. Challenge features carry no
identities: their map is drawn grey. Writes the PNG and ``<output stem>.config.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import save_config  # noqa: E402
from reid.errors import run_script  # noqa: E402
from reid.features import FeatureSet  # noqa: E402
from reid.plots import plot_feature_map, tsne_points  # noqa: E402


@dataclass
class Configuration:
    features: Path
    """A features file of predict.py (<output_dir>/<model>/features_<split>.npz)."""
    output: Path | None = None
    """The PNG to write; None = <features stem>_tsne_<images>.png beside the features file."""
    images: Literal["all", "query", "gallery"] = "all"
    """Which images to map."""
    max_players: int | None = None
    """Map only the first this many players (by id), for a readable picture; None = all."""
    max_images: int | None = 5000
    """Map at most this many images, a seeded random sample (t-SNE time grows fast with N); None = all."""
    perplexity: float = 30.0
    """t-SNE perplexity (lowered automatically for small sets)."""
    seed: int = 0
    """Seed of t-SNE and of the sample."""


def main(config: Configuration) -> Path:
    features = FeatureSet.load(config.features)
    anonymous = features.split == "challenge"
    if config.images != "all":
        features = features.subset(features.img_type == config.images[0])
    if config.max_players is not None and not anonymous:
        kept = np.unique(features.player)[:config.max_players]
        features = features.subset(np.isin(features.player, kept))
    if config.max_images is not None and len(features) > config.max_images:
        sample = np.random.default_rng(config.seed).choice(len(features), config.max_images, replace=False)
        features = features.subset(np.sort(sample))
    output = config.output or config.features.with_name(f"{config.features.stem}_tsne_{config.images}.png")

    points = tsne_points(features.features, perplexity=config.perplexity, seed=config.seed)
    players = len(np.unique(features.player))
    title = (f"t-SNE of {config.features.name} ({features.split}, {config.images} images): {len(features)} images"
             + ("" if anonymous else f", {players} players"))
    plot_feature_map(points, features.player, output, is_query=features.img_type == "q", coloured=not anonymous,
                     title=title)
    save_config(config, output.with_name(output.stem + ".config.json"))
    print(f"{title} -> {output}")
    return output


if __name__ == "__main__":
    run_script(main, Configuration)
