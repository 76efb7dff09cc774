"""Group the crops of one game into identities with a trained checkpoint (no labels needed).

    python cluster.py --checkpoint model/<run>/best.pth --images game_crops/
    python cluster.py --checkpoint model/<run>/best.pth --images game_crops/ --method dbscan --threshold 0.55
    python cluster.py --checkpoint model/<run>/best.pth --images data/data_reid/reid_challenge --truth data/synthetic_challenge_truth.csv

The crops (folders searched recursively, and files) are embedded, their distances among each other
computed (by default the k-reciprocal Jaccard distance over the set, see reid/clustering.py; --distance
raw for squared Euclidean) and clustered with scikit-learn: agglomerative clustering (--linkage) or
DBSCAN, both with a distance threshold. Unless --threshold is given it is chosen on the checkpoint's
training split (data_dir/data_reid/train_df.csv: the best mean adjusted Rand index over
--threshold-games of its games) and printed. Where the truth is known (file names
{player}_{sequence}_{frame}.jpeg as in SynergyReID and its twin, or --truth CSV with img_id and
player columns) the adjusted Rand index, NMI and pairwise precision / recall are printed. Outputs in
output_dir (default outputs/cluster):
  identities.csv          image, identity (0 = the largest group, then by size)
  sheets/identity_<k>.png a contact sheet of each identity's crops (previous sheets there are replaced)
  scores.json             with a truth: the scores, the threshold and how it was chosen
  config.json             this configuration
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reid.catalog import TRAIN_PATTERN
from reid.clustering import ClusterMethod, Linkage, WithinDistance, choose_threshold, cluster, cluster_scores, within_set_distances
from reid.config import save_config
from reid.crops import find_images
from reid.errors import InputError, run_script
from reid.files import write_text_atomically
from reid.inference import EncoderOptions, ReidEncoder
from reid.layout import image_paths, load_train_frame, read_table, split_train_test
from reid.plots import contact_sheet


@dataclass
class Configuration(EncoderOptions):
    """Also the fields of reid.inference.EncoderOptions: --flip, --model, --img-size, --mean, --std, --eval-precision,
    --batch-size, --num-workers, --device, --verbose."""

    checkpoint: Path
    """A checkpoint of a training run (best.pth or last.pth), or a published weights_e{n}.pth with --model."""
    images: list[Path]
    """The crops to group (one game): folders (searched recursively) and image files."""
    output_dir: Path = Path("outputs/cluster")
    """Where identities.csv, sheets/, scores.json and config.json go."""
    method: ClusterMethod = "agglomerative"
    """agglomerative (groups merge while closer than the threshold) or dbscan (eps = the threshold)."""
    linkage: Linkage = "average"
    """Agglomerative: distance between two groups = the average, largest or smallest crop distance."""
    min_samples: int = 2
    """DBSCAN: crops within the threshold that make a core point (crops left out get an identity each)."""
    distance: WithinDistance = "jaccard"
    """Distance among the crops: jaccard (k-reciprocal Jaccard distance over the set, re-ranked) or raw (squared Euclidean)."""
    threshold: float | None = None
    """Distance threshold of the clustering; None = chosen on the checkpoint's training split (needs data_dir)."""
    data_dir: Path = Path("data")
    """Folder that holds data_reid/ (train_df.csv and images), to choose the threshold on."""
    threshold_games: int = 8
    """Training games (sequences) the threshold is chosen on, spread over the split."""
    k1: int | None = None
    """Jaccard distance: size of the k-reciprocal neighbourhoods; None = the checkpoint's training value (a published
    checkpoint's: the published one)."""
    k2: int | None = None
    """Jaccard distance: neighbours in the local query expansion; None = the checkpoint's training value (a published
    checkpoint's: the published one)."""
    truth: Path | None = None
    """CSV with img_id (file name without extension) and player columns; None = from the file names when they all
    read {player}_{sequence}_{frame}.jpeg."""
    sheets: bool = True
    """Write a contact sheet per identity."""
    sheet_max_images: int = 60
    """Crops shown per contact sheet."""


def main(config: Configuration) -> dict:
    crops = find_images(config.images)
    truth = crop_truth(crops, config.truth)
    encoder = config.load_encoder(config.checkpoint)
    settings = encoder.training_config.rerank_settings.replaced(config.k1, config.k2)
    distance = {"distance": config.distance, "settings": settings, "device": encoder.device}
    grouping = {"method": config.method, "linkage": config.linkage, "min_samples": config.min_samples}
    print(f"{config.checkpoint}: {encoder.config.get('model')}; {len(crops)} crops; {config.distance} distance, {config.method}"
          + (f" ({config.linkage} linkage)" if config.method == "agglomerative" else f" (min_samples {config.min_samples})"))
    save_config(config, config.output_dir / "config.json")
    embed = config.embed_options

    # threshold: given, or the best mean ARI over training games
    chosen = {"threshold": config.threshold, "chosen_on": "given"}
    if config.threshold is None:
        games = training_games(encoder, config, distance, embed)
        threshold, mean_ari = choose_threshold(games, **grouping)
        chosen = {"threshold": threshold, "chosen_on": f"{len(games)} training games", "training_ari": mean_ari}
        print(f"threshold {threshold:.4f}, chosen on {len(games)} games of the training split (mean ARI there {mean_ari:.3f})")

    # features, distances among the crops, clustering
    dist = within_set_distances(encoder.embed(crops, **embed), **distance)
    identities = cluster(dist, chosen["threshold"], **grouping)
    table = pd.DataFrame({"image": [str(p) for p in crops], "identity": identities})
    table.to_csv(config.output_dir / "identities.csv", index=False)
    sizes = np.bincount(identities)
    print(f"{len(sizes)} identities ({(sizes == 1).sum()} single crops; largest {sizes.max()} crops) "
          f"-> {config.output_dir / 'identities.csv'}")

    # contact sheets
    if config.sheets:
        sheets = config.output_dir / "sheets"
        for stale in sheets.glob("identity_*.png"):
            stale.unlink()
        width = len(str(len(sizes) - 1))
        for identity, group in table.groupby("identity"):
            contact_sheet(group["image"].tolist(), sheets / f"identity_{identity:0{max(3, width)}d}.png",
                          title=f"identity {identity}: {len(group)} crops", max_images=config.sheet_max_images)
        print(f"contact sheets -> {sheets}/")

    # scores against the truth
    result = chosen | {"crops": len(crops), "identities_found": int(len(sizes))}
    if truth is not None:
        scores = cluster_scores(truth, identities)
        print(f"against the truth ({scores['identities']} players): ARI {scores['ari']:.3f}, NMI {scores['nmi']:.3f}, "
              f"pairwise precision {scores['pair_precision']:.3f}, recall {scores['pair_recall']:.3f}")
        result |= scores
        write_text_atomically(config.output_dir / "scores.json", json.dumps(result, indent=2) + "\n")
    return result


def crop_truth(crops: list[Path], truth_csv: Path | None) -> np.ndarray | None:
    """The true player of each crop: from ``truth_csv`` (img_id, player), else from SynergyReID file
    names when every crop has one, else None."""
    if truth_csv is None:
        matches = [TRAIN_PATTERN.fullmatch(path.name) for path in crops]
        return np.array([int(m.group(1)) for m in matches]) if all(matches) else None
    table = read_table(truth_csv, "--truth", dtype={"img_id": str})
    if not {"img_id", "player"} <= set(table.columns):
        raise InputError(f"--truth {truth_csv}: needs the columns img_id and player, has {', '.join(table.columns)}")
    repeated = table["img_id"][table["img_id"].duplicated()]
    if len(repeated):
        raise InputError(f"--truth {truth_csv}: img_id {repeated.iloc[0]} has several rows; a crop's player must be one")
    player_of = dict(zip(table["img_id"], table["player"]))
    missing = [path for path in crops if path.stem not in player_of]
    if missing:
        raise InputError(f"--truth {truth_csv}: no row for {missing[0]} (img_id {missing[0].stem}) "
                         f"and {len(missing) - 1} other crop(s)")
    return np.array([player_of[path.stem] for path in crops])


def training_games(encoder: ReidEncoder, config: Configuration, distance: dict, embed: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """(distances, true players) of up to ``threshold_games`` games of the checkpoint's training split."""
    try:
        frame = load_train_frame(config.data_dir)
    except FileNotFoundError as error:
        raise InputError(f"{error}; or give --threshold") from None
    training = encoder.training_config
    rows = split_train_test(frame, training.fold, training.train_on_all)[0]
    names = sorted(rows["game"].unique())
    picked = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(config.threshold_games, len(names))).round().astype(int))]
    rows = rows[rows["game"].isin(picked)].reset_index(drop=True)
    features = encoder.embed(image_paths(rows, config.data_dir), **embed)
    return [(within_set_distances(features[group.index], **distance), group["player"].to_numpy())
            for _, group in rows.groupby("game")]


if __name__ == "__main__":
    run_script(main, Configuration)
