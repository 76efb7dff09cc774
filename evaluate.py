"""Evaluate one checkpoint on its held-out split: the score table (raw / classic / hard-weight re-ranking) and a rank list.

    python evaluate.py --checkpoint model/<run>/best.pth
    python evaluate.py --checkpoint model/<run>/best.pth --flip --ranklist-choice hardest --output-dir eval/run
    python evaluate.py --checkpoint model/<run>/last.pth --split test --k1 30 --lambda-value 0.5
    python evaluate.py --checkpoint weights_e4.pth --model open_clip:ViT-L-14:openai   # a published checkpoint

The checkpoint rebuilds its model from the training configuration it carries and is evaluated on the
split it was held out on during training (the test split, or fold k when trained with --fold k), with
its re-ranking settings unless given here, so the numbers match its metrics.csv row. A published
weights_e<n>.pth carries no configuration: --model names its model, and it is evaluated on the test
split with the published settings (the published evaluate.py used lambda 0.3 for its classic
re-ranking: --lambda-value 0.3 restores that). Outputs in
output_dir (default: <checkpoint folder>/evaluate_<checkpoint name>/):
  scores.csv     one row per distance (raw, classic, hard): map, rank1, rank5, rank10, minp (fractions)
  scores.json    the same scores with the checkpoint, epoch, split and settings
  ranklist.png   a few queries with their top-10 gallery images (green frame: same player, red: another)
  config.json    this configuration
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from reid.config import Precision, TrainingConfig, save_config
from reid.devices import resolve_device
from reid.engine import autocast_dtype, load_checkpoint, load_encoder
from reid.errors import InputError, run_script
from reid.files import write_text_atomically
from reid.inference import check_finite_features, features_for_frame
from reid.layout import image_paths, split_frames
from reid.plots import plot_rank_list
from reid.prediction import choose_queries, scores_table
from reid.scoring import DISTANCES, DistanceName, evaluate_features, format_scores


@dataclass
class Configuration:
    checkpoint: Path
    """A checkpoint of a training run (best.pth or last.pth), or a published weights_e<n>.pth (then give --model)."""
    model: str | None = None
    """Model of a published weights_e<n>.pth, which does not name it (e.g. eva02_large_patch14_448.mim_m38m_ft_in22k_in1k,
    open_clip:ViT-L-14:openai); None = the checkpoint's own."""
    img_size: tuple[int, ...] | None = None
    """Input size (one int or height and width); None = the checkpoint's (published checkpoints: the model's own)."""
    mean: tuple[float, float, float] | None = None
    """Normalisation mean; None = the checkpoint's (published checkpoints: ImageNet's for timm, OpenAI's for open_clip, as published)."""
    std: tuple[float, float, float] | None = None
    """Normalisation std; None = the checkpoint's (as for --mean)."""
    data_dir: Path = Path("data")
    """Folder that holds data_reid/ (train_df.csv from preprocess_data.py, images)."""
    output_dir: Path | None = None
    """Where the scores, ranklist.png and config.json go; None = <checkpoint folder>/evaluate_<checkpoint stem>/."""
    split: str | None = None
    """test, or fold<k> (cross-validation fold k of train_df.csv); None = the split the checkpoint was held out on."""
    rerank: bool = True
    """Also score the classic and the hard-weight k-reciprocal re-ranking (else raw distances only)."""
    flip: bool | None = None
    """Flip test-time augmentation (sum of the image's and its mirror's embeddings); None = as in training (flip_test)."""
    k1: int | None = None
    """Re-ranking: size of the k-reciprocal neighbourhoods; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    k2: int | None = None
    """Re-ranking: neighbours in the local query expansion; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    lambda_value: float | None = None
    """Re-ranking: weight of the Jaccard distance (1 - lambda weights the original one); None = the checkpoint's
    training value (a published checkpoint's: the published one)."""
    ranklist_queries: int = 6
    """Queries shown in ranklist.png (0 = no picture)."""
    ranklist_choice: Literal["spread", "hardest"] = "spread"
    """Which queries: spread = evenly over the split, hardest = the lowest average precision."""
    ranklist_distance: DistanceName = "raw"
    """Distance that ranks the gallery in the picture (raw, classic or hard; re-ranked ones need --rerank)."""
    ranklist_top: int = 10
    """Gallery images shown per query."""
    batch_size: int = 64
    """Images per batch when extracting features."""
    num_workers: int = 4
    """Data-loading processes (0 = load in the main process)."""
    device: str = "auto"
    """auto (the first GPU if any, else CPU), cpu, cuda, cuda:1, ..."""
    eval_precision: Precision = "fp32"
    """Precision of the feature extraction on GPUs: fp32 (as the published evaluator), bf16 or fp16 autocast. CPU: fp32."""
    verbose: bool = True
    """Progress bars."""


def main(config: Configuration) -> dict[str, float]:
    if config.ranklist_queries > 0 and config.ranklist_distance != "raw" and not config.rerank:
        raise InputError(f"--ranklist-distance {config.ranklist_distance} needs --rerank")
    if config.split == "challenge":
        raise InputError("the challenge split has no identities to score: predict its matrices with predict.py "
                         "(on the twin, score them with predict_fortestset.py --truth)")
    output_dir = config.output_dir or config.checkpoint.parent / f"evaluate_{config.checkpoint.stem}"
    device = resolve_device(config.device)

    # model, from the configuration saved in the checkpoint
    state = load_checkpoint(config.checkpoint)
    encoder, saved = load_encoder(state, device, model=config.model, img_size=config.img_size, mean=config.mean,
                                  std=config.std, source=config.checkpoint)
    training = TrainingConfig.from_checkpoint(saved, config.checkpoint)
    split = config.split or training.held_out_split
    flip = training.flip_test if config.flip is None else config.flip
    settings = training.rerank_settings.replaced(config.k1, config.k2, config.lambda_value)
    query, gallery = split_frames(config.data_dir, split)
    if training.train_on_all and split == "test":
        print("note: this model was trained on train + test (train_on_all): its test scores are not an unbiased estimate")
    print(f"{config.checkpoint}: {training.model}, epoch {state.get('epoch', '?')}; {split} split, "
          f"{len(query)} queries x {len(gallery)} gallery images; flip {flip}; "
          f"re-ranking k1={settings.k1} k2={settings.k2} lambda={settings.lambda_value}")

    # features, in evaluation order: queries then gallery
    features = features_for_frame(encoder, pd.concat([query, gallery], ignore_index=True), config.data_dir, device,
                                  batch_size=config.batch_size, num_workers=config.num_workers, flip=flip,
                                  amp_dtype=autocast_dtype(device, config.eval_precision), verbose=config.verbose)
    check_finite_features(features, config.checkpoint)

    # distances and scores, on the device of the features (the per-epoch evaluation of training)
    evaluation = evaluate_features(features[:len(query)], features[len(query):], query["player"], gallery["player"],
                                   DISTANCES if config.rerank else ("raw",), settings, device)
    matrices, scores = evaluation.matrices, evaluation.scores
    print(format_scores(scores))

    # save
    save_config(config, output_dir / "config.json")
    scores_table({"model": scores}).drop(columns="model").to_csv(output_dir / "scores.csv", index=False)
    summary = {"checkpoint": str(config.checkpoint), "model": training.model, "epoch": state.get("epoch"),
               "split": split, "num_query": len(query), "num_gallery": len(gallery), "flip": flip, "k1": settings.k1,
               "k2": settings.k2, "lambda_value": settings.lambda_value, "scores": scores}
    write_text_atomically(output_dir / "scores.json", json.dumps(summary, indent=2) + "\n")

    # rank list
    if config.ranklist_queries > 0:
        dist = matrices[config.ranklist_distance]
        query_ids, gallery_ids = query["player"].to_numpy(), gallery["player"].to_numpy()
        average_precisions = evaluation.results[config.ranklist_distance].average_precisions  # from the scores' sort
        shown = choose_queries(average_precisions, config.ranklist_queries, config.ranklist_choice)
        plot_rank_list(dist, query_ids, gallery_ids, image_paths(query, config.data_dir), image_paths(gallery, config.data_dir),
                       shown, output_dir / "ranklist.png", top=config.ranklist_top,
                       query_notes=[f"AP {average_precisions[q]:.2f}" if not np.isnan(average_precisions[q]) else "no match"
                                    for q in shown],
                       title=f"{config.checkpoint} ({split} split, {config.ranklist_distance} distance)")
    print(f"scores -> {output_dir / 'scores.csv'}, {output_dir / 'scores.json'}"
          + (f"; rank list -> {output_dir / 'ranklist.png'}" if config.ranklist_queries > 0 else ""))
    return scores


if __name__ == "__main__":
    run_script(main, Configuration)
