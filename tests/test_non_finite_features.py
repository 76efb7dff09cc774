"""evaluate.py and predict.py refuse a checkpoint whose features hold NaN or inf (e.g. a diverged run's).

A hand-made test split of 2 players (1 query + 2 gallery images each) and tiny test_resnet checkpoints:
one as trained, one whose weights a diverged run made NaN, one whose huge finite weights overflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import evaluate
import predict
from reid.errors import InputError
from reid.models import build_model

TINY_MODEL = {"model": "test_resnet", "img_size": [48, 24], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
              "remove_proj": True, "fold": -1, "train_on_all": False}
FAST = {"num_workers": 0, "verbose": False, "device": "cpu", "k1": 2, "k2": 1}  # k1 < the 6 images


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """data_reid/ with a train_df.csv: one training image, and a test split of 2 players x (1 query + 2 gallery)."""
    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    rows = []
    images = [(1, 0, "g", "reid_training", "train")] + [(player, frame, kind, f"reid_test/{folder}", "test")
                                                       for player in (3, 7) for frame, (kind, folder)
                                                       in enumerate([("q", "query"), ("g", "gallery"), ("g", "gallery")])]
    for player, frame, kind, folder, split in images:
        img_id = f"{player}_01_{frame:02d}"
        path = root / "data_reid" / folder / f"{img_id}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)).save(path)
        rows.append({"img_id": img_id, "folder": folder, "player": player, "game": f"{split}_01", "split": split,
                     "img_type": kind, "fold": 0})
    pd.DataFrame(rows).to_csv(root / "data_reid" / "train_df.csv", index=False)
    return root


def checkpoint(path: Path, scale: float) -> Path:
    """A tiny checkpoint as training writes it, every floating-point weight multiplied by ``scale``."""
    torch.manual_seed(0)
    weights = {name: value * scale if value.is_floating_point() else value
               for name, value in build_model(TINY_MODEL).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "config": TINY_MODEL, "epoch": 1}, path)  # save_checkpoint refuses NaN
    return path


@pytest.mark.parametrize("scale", [float("nan"), 1e30], ids=["nan-weights", "overflowing-weights"])
def test_evaluate_and_predict_refuse_non_finite_features_naming_the_checkpoint(data_dir, tmp_path, scale):
    broken = checkpoint(tmp_path / "diverged" / "best.pth", scale)
    with pytest.raises(InputError, match=f"{broken}: the features of 6 of 6 images hold NaN or infinite values"):
        evaluate.main(evaluate.Configuration(checkpoint=broken, data_dir=data_dir, output_dir=tmp_path / "eval",
                                             ranklist_queries=0, **FAST))
    assert not (tmp_path / "eval" / "scores.csv").exists()

    good = checkpoint(tmp_path / "fine" / "best.pth", 1.0)
    with pytest.raises(InputError, match=f"{broken}: the features of"):
        predict.main(predict.Configuration(checkpoint=[good, broken], data_dir=data_dir, output_dir=tmp_path / "pred",
                                           splits=("test",), **FAST))
    assert (tmp_path / "pred" / "fine" / "test_raw.csv").is_file()  # the good model's matrices are kept
    assert not (tmp_path / "pred" / "diverged").exists()


def test_a_sound_checkpoint_is_scored(data_dir, tmp_path):
    scores = evaluate.main(evaluate.Configuration(checkpoint=checkpoint(tmp_path / "fine" / "best.pth", 1.0),
                                                  data_dir=data_dir, output_dir=tmp_path / "eval", ranklist_queries=0,
                                                  **FAST))
    assert 0 < scores["map_raw"] <= 1
