"""CPU training steps of a paper model at its real size (random weights), through train_our_post.py.

One command per paper model (run them one at a time; each needs the memory printed below):

    python bench/bench_train_step.py --model eva_large_patch14_336.in22k_ft_in22k_in1k        # EVA-L/336
    python bench/bench_train_step.py --model eva02_large_patch14_448.mim_m38m_ft_in22k_in1k   # EVA02-L/448
    python bench/bench_train_step.py --model eva_giant_patch14_336.clip_ft_in1k --grad-checkpointing  # EVA-giant/336
    python bench/bench_train_step.py --model beitv2_large_patch16_224.in1k_ft_in22k_in1k      # BEiTv2-L/224
    python bench/bench_train_step.py --model open_clip:ViT-L-14:openai                        # CLIP ViT-L/14
    python bench/bench_train_step.py --model resnet50 --recipe resnet                         # ResNet-50

It draws the small synthetic twin, cuts its table down to ``players`` training players with two
images each and one test player, and runs ``main`` of train_our_post.py (or train_our_post_resnet.py)
in this process with ``--no-pretrained --batch-size 2 --epochs 1 --no-rerank --device cpu`` at the
model's own input size. Prints the seconds of every optimiser step (2 pairs: forward, backward,
AdamW), their median without the first, the peak resident memory of the process and whether every
loss was finite. Nothing is downloaded.
"""

from __future__ import annotations

import math
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

import train_our_post  # noqa: E402
import train_our_post_resnet  # noqa: E402
from reid import engine  # noqa: E402
from reid.catalog import training_frame  # noqa: E402
from reid.config import parse  # noqa: E402
from reid.layout import TRAIN_TABLE, data_reid, load_train_frame  # noqa: E402
from reid.synthetic.twin import generate_twin  # noqa: E402


@dataclass
class Configuration:
    """Benchmark settings."""

    model: str = "eva_large_patch14_336.in22k_ft_in22k_in1k"
    """timm name or open_clip:<name>:<tag> (random initialisation)."""
    recipe: Literal["vit", "resnet"] = "vit"
    """Training script whose defaults apply: vit = train_our_post.py, resnet = train_our_post_resnet.py."""
    players: int = 4
    """Training players in the cut-down table (two images each, each image an anchor once): ``players`` optimiser steps of 2 pairs."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass (EVA-giant in 24 GB)."""
    threads: int | None = None
    """torch CPU threads; None = torch's default."""


def cut_down_table(data_dir: Path, players: int) -> None:
    """Keep ``players`` training players with two images each and one test player (a query, two gallery images)."""
    path = data_reid(data_dir) / TRAIN_TABLE
    frame = load_train_frame(data_dir)
    train = frame[frame["split"] == "train"]
    kept = train[train["player"].isin(sorted(train["player"].unique())[:players])].groupby("player").head(2)
    test = frame[frame["split"] == "test"]
    test = test[test["player"] == test["player"].min()]
    held_out = pd.concat([test[test["img_type"] == "q"].head(1), test[test["img_type"] == "g"].head(2)])
    pd.concat([kept, held_out]).to_csv(path, index=False)


def timed_epochs(step_seconds: list[float], losses: list[float]):
    """A train_one_epoch that records the seconds and the loss of every step."""
    real = engine.train_one_epoch

    def timed(model, loader, *args, **kwargs):
        def batches():
            for batch in loader:
                started = time.perf_counter()
                yield batch
                step_seconds.append(time.perf_counter() - started)  # resumes after the step on this batch

        criterion = model.criterion

        def recording(*inputs):
            total, parts = real_forward(*inputs)
            losses.append(float(total.detach()))
            return total, parts

        real_forward = criterion.forward
        criterion.forward = recording
        try:
            return real(model, batches(), *args, **kwargs)
        finally:
            criterion.forward = real_forward

    return timed


def main(config: Configuration) -> None:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as folder:
        data_dir = Path(folder) / "data"
        folder_reid = generate_twin(data_dir, "small", seed=0, workers=1, progress=False)
        training_frame(folder_reid).to_csv(folder_reid / TRAIN_TABLE, index=False)
        cut_down_table(data_dir, config.players)
        script = train_our_post if config.recipe == "vit" else train_our_post_resnet
        flags = ["--model", config.model, "--no-pretrained", "--batch-size", "2", "--epochs", "1", "--no-rerank",
                 "--best-metric", "map_raw", "--device", "cpu", "--num-workers", "0", "--no-verbose",
                 "--data-dir", str(data_dir), "--model-path", str(Path(folder) / "runs"), "--run-name", "bench",
                 "--batch-size-eval", "3"] + (["--grad-checkpointing"] if config.grad_checkpointing else [])
        run_config = parse(script.Configuration, flags)
        step_seconds: list[float] = []
        losses: list[float] = []
        real = engine.train_one_epoch
        engine.train_one_epoch = timed_epochs(step_seconds, losses)  # reid.training calls it through reid.engine
        try:
            script.main(run_config)
        finally:
            engine.train_one_epoch = real
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    later = step_seconds[1:] or step_seconds
    print(f"model {config.model} ({config.recipe} recipe), batch 2 pairs, {torch.get_num_threads()} CPU threads, "
          f"grad checkpointing {config.grad_checkpointing}")
    print("step seconds: " + ", ".join(f"{s:.1f}" for s in step_seconds)
          + f"; median after the first {statistics.median(later):.1f} s")
    print(f"peak process memory {peak:.1f} GiB; losses " + ", ".join(f"{v:.4f}" for v in losses)
          + f" ({'all finite' if all(math.isfinite(v) for v in losses) else 'NOT FINITE'})")


if __name__ == "__main__":
    main(parse(Configuration))
