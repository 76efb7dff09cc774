"""Search new crops with a trained checkpoint: for each query crop, the gallery crops ranked nearest first.

    python search.py --checkpoint model/<run>/best.pth --query crops/query --gallery crops/gallery
    python search.py --checkpoint model/<run>/best.pth --query player.jpeg --gallery game1/ game2/ --rerank none --topk 50
    python search.py --checkpoint model/<run>/best.pth --query game/ --gallery game/ --rerank classic

--query and --gallery take folders (searched recursively: any layout) and image files. Distances
are squared Euclidean between the L2-normalised features, re-ranked with the paper's hard-weight
re-ranking by default (--rerank classic or none), with the checkpoint's re-ranking settings unless
given. A crop in both sets is not ranked against itself. Outputs in output_dir (default
outputs/search):
  ranking.csv    per query its --topk nearest gallery crops: query, rank (from 1), gallery, distance
  ranklist.png   the first --ranklist-queries queries with their nearest gallery crops
  config.json    this configuration
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid.config import save_config
from reid.crops import find_images
from reid.errors import InputError, run_script
from reid.inference import EncoderOptions
from reid.plots import plot_rank_list
from reid.ranking import DISTANCE_OF, RerankName, ranked_table
from reid.scoring import distance_matrices


@dataclass
class Configuration(EncoderOptions):
    """Also the fields of reid.inference.EncoderOptions: --flip, --model, --img-size, --mean, --std, --eval-precision,
    --batch-size, --num-workers, --device, --verbose."""

    checkpoint: Path
    """A checkpoint of a training run (best.pth or last.pth), or a published weights_e{n}.pth with --model."""
    query: list[Path]
    """Query crops: folders (searched recursively) and image files."""
    gallery: list[Path]
    """Gallery crops: folders (searched recursively) and image files."""
    output_dir: Path = Path("outputs/search")
    """Where ranking.csv, ranklist.png and config.json go."""
    rerank: RerankName = "hard_weight"
    """Distance that ranks the gallery: hard_weight (the paper's re-ranking), classic (k-reciprocal) or none (squared Euclidean)."""
    topk: int | None = 10
    """Gallery crops listed per query; None = all of them."""
    k1: int | None = None
    """Re-ranking: size of the k-reciprocal neighbourhoods; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    k2: int | None = None
    """Re-ranking: neighbours in the local query expansion; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    lambda_value: float | None = None
    """Re-ranking: weight of the Jaccard distance; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    ranklist_queries: int = 6
    """Queries shown in ranklist.png (the first ones; 0 = no picture)."""
    ranklist_top: int = 10
    """Gallery crops shown per query in ranklist.png."""


def main(config: Configuration) -> Path:
    if config.topk is not None and config.topk < 1:
        raise InputError(f"--topk {config.topk}: give a positive number, or None for the whole gallery")
    queries, gallery = find_images(config.query), find_images(config.gallery)
    encoder = config.load_encoder(config.checkpoint)
    settings = encoder.training_config.rerank_settings.replaced(config.k1, config.k2, config.lambda_value)
    print(f"{config.checkpoint}: {encoder.config.get('model')}; {len(queries)} queries x {len(gallery)} gallery crops; "
          f"rerank {config.rerank}" + (f" (k1={settings.k1} k2={settings.k2} lambda={settings.lambda_value})"
                                       if config.rerank != "none" else ""))
    save_config(config, config.output_dir / "config.json")

    # features
    embed = config.embed_options
    query_feats, gallery_feats = encoder.embed(queries, **embed), encoder.embed(gallery, **embed)

    # distances (on the encoder's device; k1 and k2 shrink to what small sets allow, with a note), a crop
    # never ranked against itself
    distance = DISTANCE_OF[config.rerank]
    dist = distance_matrices(query_feats, gallery_feats, (distance,), settings, encoder.device)[distance]
    column_of = {path.resolve(): column for column, path in enumerate(gallery)}
    pairs = [(row, column_of[path.resolve()]) for row, path in enumerate(queries) if path.resolve() in column_of]
    if pairs:
        dist[tuple(np.array(pairs).T)] = np.inf

    # ranking table and picture
    table = ranked_table(dist, [str(p) for p in queries], [str(p) for p in gallery], config.topk)
    table.to_csv(config.output_dir / "ranking.csv", index=False, float_format="%.5f")
    print(f"ranking of {len(queries)} queries ({config.topk or 'all'} per query) -> {config.output_dir / 'ranking.csv'}")
    if config.ranklist_queries > 0:
        shown = range(min(config.ranklist_queries, len(queries)))
        picture = plot_rank_list(dist, None, None, queries, gallery, shown, config.output_dir / "ranklist.png",
                                 top=config.ranklist_top, title=f"{config.checkpoint} ({config.rerank} re-ranking)")
        print(f"rank list -> {picture}")
    return config.output_dir


if __name__ == "__main__":
    run_script(main, Configuration)
