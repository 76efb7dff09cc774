"""One training run (the loop behind ``train_our_post.py`` and ``train_our_post_resnet.py``).

``run(config)`` trains in a single process (``python train_our_post.py ...``) or as one of N
processes under torchrun (one per GPU, DistributedDataParallel). Only rank 0 writes and prints.
Outputs in ``model_path/run_name/``: ``config.json``, ``log.txt``, ``metrics.csv`` (one row per
evaluation, epoch 0 = zero-shot), ``curves.png``, ``last.pth`` (everything needed to resume) and
``best.pth`` (weights + configuration of the best epoch by ``best_metric``).

``config`` is a script's Configuration (see ``train_our_post.py`` for every field and its meaning).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from reid.config import config_to_dict, parse, save_config
from reid.data import PairDataset, UniquePlayerBatchSampler, image_paths, load_train_frame, player_labels, query_gallery, split_train_test
from reid.distributed import DistEnv, barrier, cleanup_distributed, init_distributed, seed_everything
from reid.engine import (NonFiniteLossError, PairModel, autocast_dtype, build_scheduler, describe_precision,
                         load_checkpoint, make_grad_scaler, rng_state, save_checkpoint, schedule_steps, set_rng_state,
                         train_one_epoch)
from reid.evaluation import (DISTANCES, cmc_table, complete_scores, distance_matrices, features_for_frame,
                             format_scores, score_matrices)
from reid.losses import INITIAL_LOGIT_SCALE, ReidLoss
from reid.models import build_model
from reid.plots import plot_training_curves
from reid.transforms import train_transform

T = TypeVar("T")
LOGGER_NAME = "reid.training"
# Fields that define what the weights are; a checkpoint resumed with other values cannot load.
ARCHITECTURE_FIELDS = ("model", "loss", "remove_proj")


def parse_training_config(config_class: type[T], args: Sequence[str] | None = None) -> T:
    """``parse`` for training scripts: with ``--resume CKPT`` (and no ``--config``), the checkpoint's
    own configuration is the default, so ``--resume model/run/last.pth --epochs 12`` continues the
    same run and only the flags given change."""
    args = list(sys.argv[1:] if args is None else args)
    resume = _flag_value(args, "--resume")
    if resume is not None and _flag_value(args, "--config") is None and Path(resume).is_file():
        saved = Path(resume).with_name("config.json")
        if not saved.is_file():
            values = load_checkpoint(resume)["config"]
            saved = Path(tempfile.mkdtemp()) / "config.json"
            saved.write_text(json.dumps(values))
        args = ["--config", str(saved), *args]
    return parse(config_class, args)


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, word in enumerate(args):
        if word == flag and i + 1 < len(args):
            return args[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def default_run_name(config: Any, now: datetime | None = None) -> str:
    """``<model>_<fold k | all>_seed<s>_<date-time>``, e.g. ``resnet50_fold-1_seed1_20240101-120000``."""
    model = config.model.replace("open_clip:", "openclip-").replace(":", "-").replace("/", "-")
    split = "all" if config.train_on_all else f"fold{config.fold}"
    return f"{model}_{split}_seed{config.seed}_{(now or datetime.now()):%Y%m%d-%H%M%S}"


def run(config: Any) -> Path:
    """Train as ``config`` says; returns the run folder. Joins the torchrun process group when there is one."""
    env, device = init_distributed(config.device)
    try:
        return _run(config, env, device)
    finally:
        cleanup_distributed()


def _run(config: Any, env: DistEnv, device: torch.device) -> Path:
    _check(config)
    resume_state = load_checkpoint(config.resume) if config.resume is not None else None
    run_dir = Path(config.resume).parent if resume_state else Path(config.model_path) / (config.run_name or default_run_name(config))
    log = _make_logger(run_dir / "log.txt" if env.is_main else None)
    try:
        seed_everything(config.seed + env.rank)
        if device.type == "cuda":
            set_gpu_kernels(config.fast_kernels)

        # data
        frame = load_train_frame(config.data_dir)
        train_df, held_out = split_train_test(frame, config.fold, config.train_on_all)
        query_df, gallery_df = query_gallery(held_out)
        labels, players = player_labels(train_df["player"])

        # model and loss (pretrained weights are not fetched when a checkpoint replaces them)
        encoder = build_model(dataclasses.replace(config, pretrained=False) if resume_state else config)
        config = dataclasses.replace(config, img_size=tuple(encoder.img_size), mean=tuple(encoder.mean),
                                     std=tuple(encoder.std), run_name=run_dir.name)
        criterion = ReidLoss(config.loss, encoder.embed_dim, num_classes=len(players), label_smoothing=config.label_smoothing,
                             triplet_margin=config.triplet_margin, rank=env.rank, world_size=env.world_size,
                             logit_scale_init=initial_logit_scale(config.logit_scale_init, encoder.logit_scale))
        # --mixed-precision fp16 is the published recipe: the loss, too, runs under the fp16 autocast
        model = PairModel(encoder, criterion, loss_under_autocast=config.mixed_precision == "fp16").to(device)
        train_model = (DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
                       if env.is_distributed else model)

        # batches of distinct players, the same number on every rank
        sampler = UniquePlayerBatchSampler(labels, rank_batch_size(config, env.world_size), seed=config.seed, rank=env.rank,
                                           world_size=env.world_size, packing=config.batch_packing)
        dataset = PairDataset(image_paths(train_df, config.data_dir), labels,
                              train_transform(encoder.img_size, encoder.mean, encoder.std), prob_flip=config.prob_flip)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda")

        # optimiser, schedule, mixed precision
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sampler.set_epoch(1)
        warmup_steps, total_steps = schedule_steps(len(sampler), config.epochs, config.warmup_epochs, config.gradient_accumulation)
        scheduler = build_scheduler(optimizer, config.scheduler, warmup_steps=warmup_steps, total_steps=total_steps,
                                    lr_end=config.lr_end)
        amp_dtype = autocast_dtype(device, config.mixed_precision)
        scaler = make_grad_scaler(amp_dtype)
        eval_dtype = autocast_dtype(device, config.eval_precision)

        # resume
        start_epoch, best = 0, {"score": -math.inf, "epoch": None}
        rows: list[dict[str, float]] = []
        if resume_state:
            start_epoch, best = _restore(resume_state, config, model, optimizer, scheduler, scaler, env)
            rows = _read_metrics(run_dir / "metrics.csv", up_to_epoch=start_epoch) if env.is_main else []
        if env.is_main:
            save_config(config, run_dir / "config.json")
        _log_header(log, config, env, device, encoder, criterion, train_df, query_df, gallery_df, len(sampler), start_epoch)

        def evaluate(epoch: int) -> dict[str, float] | None:
            features = features_for_frame(model.encoder, pd.concat([query_df, gallery_df]), config.data_dir, device,
                                          batch_size=config.batch_size_eval, num_workers=config.num_workers,
                                          flip=config.flip_test, amp_dtype=eval_dtype, verbose=config.verbose and env.is_main,
                                          rank=env.rank, world_size=env.world_size)
            if not env.is_main:
                return None
            query_ids, gallery_ids = query_df["player"].to_numpy(), gallery_df["player"].to_numpy()
            matrices = distance_matrices(features[:len(query_df)], features[len(query_df):],
                                         DISTANCES if config.rerank else ("raw",), k1=config.k1, k2=config.k2,
                                         lambda_value=config.lambda_value)
            scores = complete_scores(score_matrices(matrices, query_ids, gallery_ids))
            log.info("epoch %d, held-out scores (%d queries, %d gallery):\n%s\n%s", epoch, len(query_df), len(gallery_df),
                     format_scores(scores), cmc_table(matrices, query_ids, gallery_ids))
            return scores

        # zero-shot
        if config.zero_shot and start_epoch == 0:
            scores = evaluate(0)
            if env.is_main:
                rows.append({"epoch": 0, **scores, "train_loss": math.nan, "lr": math.nan, "seconds": math.nan})
                _write_metrics(rows, run_dir)

        for epoch in range(start_epoch + 1, config.epochs + 1):
            # train
            sampler.set_epoch(epoch)
            started = time.perf_counter()
            try:
                stats = train_one_epoch(train_model, loader, optimizer, scheduler, device, epoch, scaler=scaler, amp_dtype=amp_dtype,
                                        gradient_accumulation=config.gradient_accumulation,
                                        gradient_clipping=config.gradient_clipping, verbose=config.verbose and env.is_main)
            except NonFiniteLossError as error:
                kept = run_dir / "last.pth"
                log.error("%s; the last good checkpoint is %s", error, kept if kept.is_file() else "none (no epoch finished)")
                raise
            seconds = time.perf_counter() - started
            log.info("epoch %d: loss %.4f, lr %.3g, %.1f s (%.1f images/s)", epoch, stats["loss"], stats["lr"], seconds,
                     2 * len(sampler) * rank_batch_size(config, env.world_size) * env.world_size / seconds)
            # evaluate
            scores = evaluate(epoch)
            # log and save (rank 0)
            states = _gather_rng_states(env)
            if env.is_main:
                rows.append({"epoch": epoch, **scores, "train_loss": stats["loss"], "lr": stats["lr"], "seconds": seconds})
                _write_metrics(rows, run_dir)
                is_best = scores[config.best_metric] > best["score"]
                if is_best:
                    best = {"score": scores[config.best_metric], "epoch": epoch}
                weights = {"model": model.encoder.state_dict(), "criterion": model.criterion.state_dict(),
                           "config": config_to_dict(config), "epoch": epoch, "scores": scores}
                if is_best:
                    save_checkpoint(weights, run_dir / "best.pth")
                save_checkpoint(weights | {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                           "scaler": scaler.state_dict() if scaler is not None else None,
                                           "step": scheduler.last_epoch, "best": best, "rng": states},
                                run_dir / "last.pth")
                log.info("saved %s%s", run_dir / "last.pth", f" and {run_dir / 'best.pth'} (best {config.best_metric})" if is_best else "")
            barrier()
        if env.is_main:
            log.info("done: best %s %.4f at epoch %s; outputs in %s", config.best_metric, best["score"], best["epoch"], run_dir)
        return run_dir
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)


def set_gpu_kernels(fast: bool) -> None:
    """cuDNN and matmul settings. fast: autotuned cuDNN kernels and TF32 matmuls (faster, not
    bit-reproducible); else what the published run had: deterministic cuDNN, no autotuning (its
    ``cudnn_benchmark=True`` set a misspelt attribute, so it never took effect), float32 matmuls."""
    torch.backends.cudnn.benchmark = fast
    torch.backends.cudnn.deterministic = not fast
    torch.backends.cuda.matmul.allow_tf32 = fast


def initial_logit_scale(setting: float | str, model_value: float | None) -> float:
    """The InfoNCE log-temperature to start from: ``model`` = the encoder's own (a CLIP tower's learned
    logit scale) when it has one, else ln(1/0.07); a number = that value."""
    if setting == "model":
        return INITIAL_LOGIT_SCALE if model_value is None else float(model_value)
    return float(setting)


def rank_batch_size(config: Any, world_size: int) -> int:
    """Pairs per batch on each process: ``batch_size`` (``batch_scope`` per_gpu), or ``batch_size`` split
    evenly over the processes (``total``, as the published DataParallel script split it)."""
    if config.batch_scope == "per_gpu":
        return config.batch_size
    if config.batch_size % world_size:
        raise ValueError(f"--batch-scope total: batch_size {config.batch_size} does not split evenly over {world_size} "
                         "processes; choose a multiple of the number of GPUs")
    return config.batch_size // world_size


def _check(config: Any) -> None:
    if config.epochs < 0 or config.batch_size < 1 or config.gradient_accumulation < 1:
        raise ValueError("epochs must be >= 0, batch_size and gradient_accumulation >= 1")
    if config.logit_scale_init != "model" and not math.isfinite(float(config.logit_scale_init)):
        raise ValueError(f"logit_scale_init must be 'model' or a finite number, got {config.logit_scale_init!r}")
    if not config.rerank and config.best_metric != "map_raw":
        raise ValueError(f"best_metric {config.best_metric} needs the re-ranked scores: set --rerank or --best-metric map_raw")


def _restore(state: dict[str, Any], config: Any, model: PairModel, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler | None,
             env: DistEnv) -> tuple[int, dict[str, Any]]:
    """Load a ``last.pth`` into the run's objects; returns (epochs done, best so far)."""
    saved = state["config"]
    for name in ARCHITECTURE_FIELDS:
        if saved.get(name) != getattr(config, name):
            raise ValueError(f"--resume {config.resume}: the checkpoint was trained with {name}={saved.get(name)!r}, "
                             f"this run says {getattr(config, name)!r}")
    if "optimizer" not in state:
        raise ValueError(f"--resume {config.resume}: this checkpoint holds weights only; resume from a last.pth")
    model.encoder.load_state_dict(state["model"])
    model.criterion.load_state_dict(state["criterion"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    # The schedule may have been stretched (--epochs raised): continue on the new curve.
    for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base_lr * factor(scheduler.last_epoch)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if len(state["rng"]) == env.world_size:
        set_rng_state(state["rng"][env.rank])
    return int(state["epoch"]), dict(state["best"])


def _gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's random state, rank order (all ranks take part; rank 0 saves them)."""
    state = rng_state()
    if not env.is_distributed:
        return [state]
    gathered: list[Any] = [None] * env.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, float]]:
    # Rows after the checkpoint's epoch belong to an epoch that will be trained again.
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    return table[table["epoch"] <= up_to_epoch].to_dict("records")


def _write_metrics(rows: list[dict[str, float]], run_dir: Path) -> None:
    table = pd.DataFrame(rows)
    temporary = run_dir / ".metrics.csv.tmp"
    table.to_csv(temporary, index=False, float_format="%.6f")
    os.replace(temporary, run_dir / "metrics.csv")
    plot_training_curves(table, run_dir / "curves.png", title=run_dir.name)


def _make_logger(path: Path | None) -> logging.Logger:
    """Messages to stdout and (appending) to ``path``; silent when ``path`` is None (ranks > 0)."""
    log = logging.getLogger(LOGGER_NAME)
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if path is None:
        log.addHandler(logging.NullHandler())
        return log
    path.parent.mkdir(parents=True, exist_ok=True)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    file = logging.FileHandler(path, mode="a", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(console)
    log.addHandler(file)
    return log


def _log_header(log: logging.Logger, config: Any, env: DistEnv, device: torch.device, encoder: torch.nn.Module,
                criterion: ReidLoss, train_df: pd.DataFrame, query_df: pd.DataFrame, gallery_df: pd.DataFrame, batches: int,
                start_epoch: int) -> None:
    parameters = sum(p.numel() for p in encoder.parameters())
    log.info("%s run %s on %d process(es), device %s; training %s, evaluation %s", "resuming" if start_epoch else "starting",
             config.run_name, env.world_size, device, describe_precision(device, config.mixed_precision),
             describe_precision(device, config.eval_precision))
    log.info("model %s: %.1f M parameters, embedding %d, image %s, mean %s, std %s", config.model, parameters / 1e6,
             encoder.embed_dim, "x".join(map(str, encoder.img_size)), np.round(encoder.mean, 4).tolist(),
             np.round(encoder.std, 4).tolist())
    log.info("data: %d training images of %d players, %d batches of %d x %d per epoch; held-out %d queries, %d gallery",
             len(train_df), train_df["player"].nunique(), batches, rank_batch_size(config, env.world_size), env.world_size,
             len(query_df), len(gallery_df))
    if hasattr(criterion, "logit_scale"):
        log.info("InfoNCE temperature: logit scale %.4f (exp %.2f) at the start", criterion.logit_scale.item(),
                 criterion.logit_scale.exp().item())
    log.info("loss %s, lr %g (%s, warm-up %g epochs), %d epochs%s", config.loss, config.lr, config.scheduler,
             config.warmup_epochs, config.epochs, f", from epoch {start_epoch + 1}" if start_epoch else "")
