"""TensorBoard logging of a training run (``--tensorboard``): per step and per epoch, rank 0 only.

Written with ``torch.utils.tensorboard`` into ``<run folder>/tensorboard/`` (``tensorboard --logdir
model/``). Tags: ``train/loss``, ``train/lr``, ``train/temperature`` (InfoNCE: 1 / exp(logit scale))
and ``train/<loss term>`` per optimiser batch, x = batches since the start of the run;
``eval/<score>_<distance>`` (map_raw, rank1_hard, minp_classic, ...) and ``eval/train_loss`` per
epoch, x = the epoch (0 = zero-shot). A resumed run adds an event file (the steps continue); a new
run in the folder (``--overwrite``) removes the earlier run's. The tensorboard package is an optional
dependency (``requirements-extras.txt``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from torch import nn

from reid.errors import InputError

FOLDER = "tensorboard"


class TrainingBoard:
    """One run's event files. ``step_logger(epoch)`` is ``train_one_epoch``'s ``on_step``; ``epoch_scores``
    takes the held-out scores; ``close`` flushes."""

    def __init__(self, run_dir: Path, criterion: nn.Module, batches_per_epoch: int, resumed: bool = False) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("--tensorboard needs the tensorboard package: pip install -r requirements-extras.txt") from None
        folder = Path(run_dir) / FOLDER
        if not resumed:  # a new run in this folder (--overwrite): the earlier run's curves would mix with its own
            for stale in folder.glob("events.out.tfevents.*"):
                stale.unlink()
        self.writer = SummaryWriter(log_dir=str(folder))
        self.criterion = criterion
        self.batches_per_epoch = batches_per_epoch

    def step_logger(self, epoch: int) -> Callable[[int, dict[str, float]], None]:
        def log(step: int, values: dict[str, float]) -> None:
            global_step = (epoch - 1) * self.batches_per_epoch + step
            for name, value in values.items():
                self.writer.add_scalar(f"train/{name}", value, global_step)
            logit_scale = getattr(self.criterion, "logit_scale", None)
            if logit_scale is not None:
                self.writer.add_scalar("train/temperature", math.exp(-float(logit_scale.detach())), global_step)
        return log

    def epoch_scores(self, epoch: int, scores: dict[str, float], train_loss: float | None = None) -> None:
        for name, value in scores.items():
            if not math.isnan(value):
                self.writer.add_scalar(f"eval/{name}", value, epoch)
        if train_loss is not None:
            self.writer.add_scalar("eval/train_loss", train_loss, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
