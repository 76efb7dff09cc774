"""Predict with trained checkpoints: features, test and challenge distance matrices (submission CSVs), ensemble.

    python predict.py --checkpoint model/<run>/best.pth
    python predict.py --checkpoint model/eva/best.pth model/eva02/best.pth model/beit/best.pth --flip
    python predict.py --checkpoint model/<run>/best.pth --splits challenge --distances hard --device cuda
    python predict.py --checkpoint weights_e7.pth --model eva02_large_patch14_448.mim_m38m_ft_in22k_in1k   # published weights

Each checkpoint rebuilds its model from the training configuration it carries; a published
weights_e<n>.pth carries none, so --model names it (image size: the model's own; normalisation:
ImageNet's for timm, OpenAI's for open_clip, as the published scripts). Outputs in output_dir
(default outputs/predictions):
  <model>/features_<split>.npz     features + ids in evaluation order (keys: see reid/features.py)
  <model>/<split>_<distance>.csv   distance matrix in the submission format (test: player ids,
                                   challenge: file numbers), distance = raw | classic | hard
  ensemble/<split>_<distance>.csv  with several checkpoints: the mean of the models' matrices
  scores.csv                       test-split scores of every model and of the ensemble
  config.json                      this configuration
Fuse saved matrices further with my_py/sim_fuse.py and my_py/dissim_fuse.py; score a test matrix
with predict_fortestset.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from reid.config import Precision, TrainingConfig, save_config
from reid.devices import resolve_device
from reid.engine import autocast_dtype, load_encoder
from reid.errors import InputError, run_script
from reid.features import FeatureSet
from reid.inference import check_finite_features, features_for_frame
from reid.layout import split_frames
from reid.matrices import check_aligned
from reid.prediction import model_names, scores_table, split_matrix
from reid.retrieval.fusion import similarity_fusion
from reid.scoring import DistanceName, distance_matrices, format_scores, score_matrices

ENSEMBLE = "ensemble"  # the output folder of the models' mean


@dataclass
class Configuration:
    checkpoint: list[Path]
    """One checkpoint (best.pth or last.pth of a training run, or a published weights_e<n>.pth) or several (their matrices are also averaged)."""
    model: list[str] | None = None
    """Model of each published weights_e<n>.pth, which does not name it (one name for all, or one per checkpoint),
    e.g. eva02_large_patch14_448.mim_m38m_ft_in22k_in1k; None = each checkpoint's own."""
    img_size: tuple[int, ...] | None = None
    """Input size (one int or height and width) for every checkpoint; None = each checkpoint's (published checkpoints: the model's own)."""
    mean: tuple[float, float, float] | None = None
    """Normalisation mean for every checkpoint; None = each checkpoint's (published checkpoints: ImageNet's for timm, OpenAI's for open_clip)."""
    std: tuple[float, float, float] | None = None
    """Normalisation std for every checkpoint; None = each checkpoint's (as for --mean)."""
    data_dir: Path = Path("data")
    """Folder that holds data_reid/ (train_df.csv and challenge_df.csv from preprocess_data.py, images)."""
    output_dir: Path = Path("outputs/predictions")
    """Where the features, matrices, scores and config.json go (one subfolder per model, one for the ensemble)."""
    splits: tuple[Literal["test", "challenge"], ...] = ("test", "challenge")
    """Splits to predict: test (ids are player ids, scored) and challenge (ids are file numbers)."""
    distances: tuple[DistanceName, ...] = ("raw", "classic", "hard")
    """Matrices written per split: raw squared Euclidean, classic k-reciprocal re-ranking, hard-weight re-ranking (the paper's)."""
    names: list[str] | None = None
    """Output folder name of each checkpoint; None = its run folder (plus the file stem where two share one)."""
    ensemble: bool = True
    """With several checkpoints, also write ensemble/<split>_<distance>.csv, the mean of the models' matrices."""
    flip: bool = False
    """Test-time augmentation: each feature is the sum of the image's and its mirror image's embeddings."""
    k1: int | None = None
    """Re-ranking: size of the k-reciprocal neighbourhoods; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    k2: int | None = None
    """Re-ranking: neighbours in the local query expansion; None = the checkpoint's training value (a published checkpoint's: the published one)."""
    lambda_value: float | None = None
    """Re-ranking: weight of the Jaccard distance (1 - lambda weights the original one); None = the checkpoint's
    training value (a published checkpoint's: the published one)."""
    save_features: bool = True
    """Write <model>/features_<split>.npz (for my_py/plot_fea.py and my_py/cal_feadist.py)."""
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


def main(config: Configuration) -> None:
    names = config.names or model_names(config.checkpoint)
    if len(names) != len(config.checkpoint) or len(set(names)) != len(names) or ENSEMBLE in names:
        raise InputError(f"need one distinct name per checkpoint, other than {ENSEMBLE!r}; got names {names} "
                         f"for {len(config.checkpoint)} checkpoint(s)")
    models = config.model or [None]
    if len(models) not in (1, len(config.checkpoint)):
        raise InputError(f"--model: give one name for all checkpoints or one per checkpoint; got {len(models)} names "
                         f"for {len(config.checkpoint)} checkpoints")
    models = models * len(config.checkpoint) if len(models) == 1 else models
    missing = [str(path) for path in config.checkpoint if not path.is_file()]
    if missing:  # before any work: a typo in the last of several checkpoints should not wait for the others
        raise FileNotFoundError(f"checkpoint(s) not found: {', '.join(missing)}")
    device = resolve_device(config.device)
    frames = {split: split_frames(config.data_dir, split) for split in config.splits}
    save_config(config, config.output_dir / "config.json")

    collected: dict[tuple[str, str], list] = defaultdict(list)  # (split, distance) -> one DistanceMatrix per model
    scores: dict[str, dict[str, float]] = {}
    for checkpoint, name, model in zip(config.checkpoint, names, models):
        # model, from the configuration saved in the checkpoint (or --model for a published one)
        encoder, saved = load_encoder(checkpoint, device, model=model, img_size=config.img_size, mean=config.mean,
                                      std=config.std)
        training = TrainingConfig.from_checkpoint(saved, checkpoint)
        settings = training.rerank_settings.replaced(config.k1, config.k2, config.lambda_value)
        print(f"== {name}: {checkpoint} ({training.model}, image size {tuple(encoder.img_size)}, "
              f"re-ranking k1={settings.k1} k2={settings.k2} lambda={settings.lambda_value})")
        for split, (query, gallery) in frames.items():
            # features, in evaluation order: queries then gallery
            rows = pd.concat([query, gallery], ignore_index=True)
            features = features_for_frame(encoder, rows, config.data_dir, device, batch_size=config.batch_size,
                                          num_workers=config.num_workers, flip=config.flip,
                                          amp_dtype=autocast_dtype(device, config.eval_precision), verbose=config.verbose)
            check_finite_features(features, checkpoint)
            if config.save_features:
                FeatureSet.from_frame(rows, features, split, checkpoint, config.flip).save(
                    config.output_dir / name / f"features_{split}.npz")
            # distance matrices (on the device of the features), written in the submission format
            matrices = distance_matrices(features[:len(query)], features[len(query):], config.distances, settings, device)
            for distance, values in matrices.items():
                matrix = split_matrix(values, query, gallery)
                matrix.write_csv(config.output_dir / name / f"{split}_{distance}.csv")
                collected[split, distance].append(matrix)
            if split == "test":
                scores[name] = score_matrices(matrices, query["player"], gallery["player"])
            print(f"   {split}: {len(query)} queries x {len(gallery)} gallery -> {config.output_dir / name}/{split}_*.csv")
        del encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # ensemble: the mean of the models' matrices
    if config.ensemble and len(config.checkpoint) > 1:
        for (split, distance), matrices in collected.items():
            fused = matrices[0].with_values(similarity_fusion(check_aligned(matrices), decimals=None))
            fused.write_csv(config.output_dir / ENSEMBLE / f"{split}_{distance}.csv")
            if split == "test":
                query, gallery = frames["test"]
                scores.setdefault(ENSEMBLE, {}).update(score_matrices({distance: fused.values}, query["player"], gallery["player"]))
        print(f"== ensemble of {len(config.checkpoint)} models -> {config.output_dir / ENSEMBLE}/")

    # test-split scores
    if scores:
        table = scores_table(scores)
        table.to_csv(config.output_dir / "scores.csv", index=False)
        for name, values in scores.items():
            print(f"\ntest split, {name}:\n{format_scores(values)}")
        print(f"\nscores -> {config.output_dir / 'scores.csv'}")


if __name__ == "__main__":
    run_script(main, Configuration)
