"""One training run (the loop behind ``train_our_post.py`` and ``train_our_post_resnet.py``).

``run(config)`` trains in a single process (``python train_our_post.py ...``) or as one of N
processes under torchrun (one per GPU, DistributedDataParallel). Only rank 0 writes and prints.
Outputs in ``model_path/run_name/``: ``config.json``, ``log.txt``, ``metrics.csv`` (one row per
evaluation, epoch 0 = zero-shot), ``curves.png``, ``last.pth`` (everything needed to resume) and
``best.pth`` (weights + configuration of the best epoch by ``best_metric``); with ``tensorboard``,
``tensorboard/`` (``reid.tensorboard_log``).

``config`` is a ``reid.config.TrainingConfig`` (a script's Configuration subclasses it; every field and
its meaning are there). The held-out evaluation runs where training runs (``reid.devices``): on a
GPU, the re-rankings too.

Faults: a run folder that holds a run is refused unless the run is resumed or ``overwrite`` is set,
and one in use by a live run always (``reid.run_folder``). A resumed run takes the checkpoint's
configuration as the truth: the fields of ``RESUMABLE_FIELDS`` may change and take effect, any other
change is refused by name. A diverging run (NaN or infinite loss, gradient norm, weight, buffer or
feature) stops naming the epoch, the step and the last good checkpoint; no checkpoint holding a
non-finite tensor is ever written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from reid import engine
from reid.config import ConfigError, TrainingConfig, config_from_dict, config_to_dict, parse, save_config
from reid.data import PairDataset, UniquePlayerBatchSampler, player_labels
from reid.distributed import DistEnv, barrier, cleanup_distributed, init_distributed, seed_everything
from reid.errors import FILE_ERRORS, InputError, Interrupted, RunFailure, message
from reid.files import atomic_path
from reid.inference import features_for_frame
from reid.layout import image_paths, load_train_frame, query_gallery, split_train_test
from reid.losses import INITIAL_LOGIT_SCALE, ReidLoss
from reid.models import build_model
from reid.plots import plot_training_curves
from reid.run_folder import claim_run_folder
from reid.scoring import DISTANCES, complete_scores, evaluate_features, format_scores
from reid.tensorboard_log import TrainingBoard
from reid.transforms import train_transform

T = TypeVar("T")
C = TypeVar("C", bound=TrainingConfig)
LOGGER_NAME = "reid.training"
# The fields a resumed run may change: each takes effect from the first resumed epoch. Any other
# field defines what the weights are (model, image size, loss), what the epochs already trained saw
# (batch size, accumulation, seed, split) or has no effect once a run has started (zero_shot,
# pretrained weights), and is refused when it differs from the checkpoint's.
RESUMABLE_FIELDS = frozenset({
    "epochs", "lr", "lr_end", "weight_decay", "scheduler", "warmup_epochs", "gradient_clipping",  # optimisation
    "label_smoothing", "triplet_margin", "prob_flip", "mixed_precision", "grad_checkpointing",  # loss, augmentation, memory
    "rerank", "k1", "k2", "lambda_value", "flip_test", "batch_size_eval", "eval_precision",  # evaluation
    "data_dir", "num_workers", "device", "verbose", "fast_kernels", "tensorboard",  # where and how
})
# Fields that say what one invocation does rather than what the run is.
ACTION_FIELDS = ("resume", "overwrite")


def parse_training_config(config_class: type[C], args: Sequence[str] | None = None) -> C:
    """``parse`` for training scripts: with ``--resume CKPT`` (and no ``--config``), the checkpoint's
    own configuration is the default, so ``--resume model/run/last.pth --epochs 12`` continues the
    same run and only the flags given change. (The run folder's config.json is not read: the
    checkpoint is the truth, and ``run`` reports a config.json that disagrees with it.)"""
    args = list(sys.argv[1:] if args is None else args)
    resume = _flag_value(args, "--resume")
    default = None
    if resume is not None and _flag_value(args, "--config") is None and Path(resume).is_file():
        default = checkpoint_config(config_class, resume)
    return parse(config_class, args, default=default)


def checkpoint_config(config_class: type[C], path: str | os.PathLike) -> C:
    """The training configuration saved in the checkpoint at ``path``, as ``config_class``."""
    state = engine.load_checkpoint(path, mmap=True)  # the weights are read once, by the run
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise InputError(f"--resume {path}: not a training checkpoint of this project (no configuration inside)")
    try:
        return config_from_dict(config_class, state["config"])
    except ConfigError as error:
        raise InputError(f"--resume {path}: its configuration does not fit {config_class.__name__} ({error}); "
                         "was it written by another version of this project?") from None


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, word in enumerate(args):
        if word == flag and i + 1 < len(args):
            return args[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def default_run_name(config: TrainingConfig, now: datetime | None = None) -> str:
    """``<model>_<fold k | all>_seed<s>_<date-time>``, e.g. ``resnet50_fold-1_seed1_20240101-120000``."""
    model = config.model.replace("open_clip:", "openclip-").replace(":", "-").replace("/", "-")
    split = "all" if config.train_on_all else f"fold{config.fold}"
    return f"{model}_{split}_seed{config.seed}_{(now or datetime.now()):%Y%m%d-%H%M%S}"


def run(config: TrainingConfig) -> Path:
    """Train as ``config`` says; returns the run folder. Joins the torchrun process group when there is one."""
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"run() takes a reid.config.TrainingConfig (a training script's Configuration), got {type(config).__name__}")
    env, device = init_distributed(config.device)
    try:
        return _run(config, env, device)
    finally:
        cleanup_distributed()


def _run(config: TrainingConfig, env: DistEnv, device: torch.device) -> Path:
    _check(config)
    resume_state = engine.load_checkpoint(config.resume) if config.resume is not None else None
    changes: dict[str, tuple[Any, Any]] = {}
    if resume_state is not None:
        config, changes = _resume_config(config, resume_state)
        run_dir = Path(config.resume).parent
    else:
        run_dir = Path(config.model_path) / (config.run_name or default_run_name(config))
    # the folder: locked for this run, refused when in use or holding another run (rank 0 decides for all)
    folder = _decided_on_main(env, lambda: claim_run_folder(run_dir, resume=resume_state is not None,
                                                              overwrite=config.overwrite))
    log = _make_logger(run_dir / "log.txt" if env.is_main else None)
    started = False  # log.txt is written from the header on (a run that fails before leaves no empty log)
    board: TrainingBoard | None = None
    last_good: tuple[Path, int] | None = None  # (checkpoint, epoch) that a failure or Ctrl-C can point to
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
        model = engine.PairModel(encoder, criterion, loss_under_autocast=config.mixed_precision == "fp16").to(device)
        train_model = (DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
                       if env.is_distributed else model)

        # batches of distinct players, the same number on every rank
        sampler, loader = training_batches(config, train_df, labels, encoder, device, env)

        # optimiser, schedule, mixed precision
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sampler.set_epoch(1)
        warmup_steps, total_steps = engine.schedule_steps(len(sampler), config.epochs, config.warmup_epochs, config.gradient_accumulation)
        scheduler = engine.build_scheduler(optimizer, config.scheduler, warmup_steps=warmup_steps, total_steps=total_steps,
                                           lr_end=config.lr_end)
        amp_dtype = engine.autocast_dtype(device, config.mixed_precision)
        scaler = engine.make_grad_scaler(amp_dtype)
        eval_dtype = engine.autocast_dtype(device, config.eval_precision)

        # resume
        start_epoch, best = 0, {"score": -math.inf, "epoch": None}
        rows: list[dict[str, float]] = []
        if resume_state:
            start_epoch, best = _restore(resume_state, config, model, optimizer, scheduler, scaler, env)
            last_good = (Path(config.resume), start_epoch)
            rows = _read_metrics(run_dir / "metrics.csv", up_to_epoch=start_epoch) if env.is_main else []
        if env.is_main:
            folder.remove_earlier_run()
            if resume_state:
                folder.notes += _config_json_disagreement(run_dir / "config.json", resume_state["config"])
            save_config(_recorded(config), run_dir / "config.json")
        started = True
        _log_header(log, config, env, device, encoder, criterion, train_df, query_df, gallery_df, len(sampler), start_epoch)
        if config.tensorboard and env.is_main:
            board = TrainingBoard(run_dir, model.criterion, batches_per_epoch=len(sampler), resumed=resume_state is not None)
        if changes:
            log.info("changed on resume: %s", ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in changes.items()))
        for note in folder.notes if env.is_main else []:
            log.info("note: %s", note)

        def failure(message: str) -> RunFailure:
            kept = (f"the last good checkpoint is {last_good[0]} (epoch {last_good[1]})" if last_good
                    else "no checkpoint was written")
            return RunFailure(f"{message}; {kept}")

        def evaluate(epoch: int) -> dict[str, float] | None:
            features = features_for_frame(model.encoder, pd.concat([query_df, gallery_df]), config.data_dir, device,
                                          batch_size=config.batch_size_eval, num_workers=config.num_workers,
                                          flip=config.flip_test, amp_dtype=eval_dtype, verbose=config.verbose and env.is_main,
                                          rank=env.rank, world_size=env.world_size)
            if not np.isfinite(features).all():  # every rank holds all features: all stop together
                raise failure(f"the held-out features of epoch {epoch} hold NaN or infinite values (the weights diverged, "
                              f"or overflow{f' in {eval_dtype}' if eval_dtype else ''}); training stopped")
            if not env.is_main:
                return None
            # distances and re-rankings on the training device; each matrix sorted once for all its scores
            evaluation = evaluate_features(features[:len(query_df)], features[len(query_df):], query_df["player"].to_numpy(),
                                           gallery_df["player"].to_numpy(), DISTANCES if config.rerank else ("raw",),
                                           config.rerank_settings, device, note=lambda text: log.info("note: %s", text))
            scores = complete_scores(evaluation.scores)
            log.info("epoch %d, held-out scores (%d queries, %d gallery):\n%s\n%s", epoch, len(query_df), len(gallery_df),
                     format_scores(scores), evaluation.cmc_table())
            return scores

        # zero-shot
        if config.zero_shot and start_epoch == 0:
            evaluated_at = time.perf_counter()
            scores = evaluate(0)
            if env.is_main:
                rows.append({"epoch": 0, **scores, "train_loss": math.nan, "lr": math.nan, "seconds": math.nan,
                             "eval_seconds": time.perf_counter() - evaluated_at})
                _write_metrics(rows, run_dir)
                if board is not None:
                    board.epoch_scores(0, scores)

        for epoch in range(start_epoch + 1, config.epochs + 1):
            # train (the loss, gradient norm and buffers checked at every step, every weight at the end)
            sampler.set_epoch(epoch)
            started_at = time.perf_counter()
            try:
                stats = engine.train_one_epoch(train_model, loader, optimizer, scheduler, device, epoch, scaler=scaler,
                                               amp_dtype=amp_dtype, gradient_accumulation=config.gradient_accumulation,
                                               gradient_clipping=config.gradient_clipping, verbose=config.verbose and env.is_main,
                                               on_step=board.step_logger(epoch) if board is not None else None)
            except engine.NonFiniteError as error:
                raise failure(str(error)) from None
            seconds = time.perf_counter() - started_at
            log.info("epoch %d: loss %.4f, lr %.3g, %.1f s (%.1f images/s)", epoch, stats["loss"], stats["lr"], seconds,
                     2 * len(sampler) * rank_batch_size(config, env.world_size) * env.world_size / seconds)
            # evaluate
            evaluated_at = time.perf_counter()
            scores = evaluate(epoch)
            eval_seconds = time.perf_counter() - evaluated_at
            # log and save (rank 0; save_checkpoint writes nothing non-finite)
            states = _gather_rng_states(env)
            if env.is_main:
                rows.append({"epoch": epoch, **scores, "train_loss": stats["loss"], "lr": stats["lr"], "seconds": seconds,
                             "eval_seconds": eval_seconds})
                _write_metrics(rows, run_dir)
                if board is not None:
                    board.epoch_scores(epoch, scores, stats["loss"])
                is_best = scores[config.best_metric] > best["score"]
                if is_best:
                    best = {"score": scores[config.best_metric], "epoch": epoch}
                weights = {"model": model.encoder.state_dict(), "criterion": model.criterion.state_dict(),
                           "config": config_to_dict(_recorded(config)), "epoch": epoch, "scores": scores}
                try:
                    if is_best:
                        engine.save_checkpoint(weights, run_dir / "best.pth")
                    engine.save_checkpoint(weights | {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                                      "scaler": scaler.state_dict() if scaler is not None else None,
                                                      "step": scheduler.last_epoch, "best": best, "rng": states},
                                           run_dir / "last.pth")
                except engine.NonFiniteError as error:
                    raise failure(f"after epoch {epoch}: {error}") from None
            last_good = (run_dir / "last.pth", epoch)  # before "saved" is printed: a Ctrl-C after it names this epoch
            if env.is_main:
                log.info("saved %s%s", run_dir / "last.pth", f" and {run_dir / 'best.pth'} (best {config.best_metric})" if is_best else "")
            barrier()
        if env.is_main:
            log.info("done: best %s %.4f at epoch %s; outputs in %s", config.best_metric, best["score"], best["epoch"], run_dir)
        return run_dir
    except (RunFailure, InputError) as error:
        if started:
            _log_to_file(log, f"error: {message(error)}")  # without the traceback of a DataLoader worker
        raise
    except KeyboardInterrupt:
        kept = (f"epoch {last_good[1]} is saved in {last_good[0]}; go on with --resume {last_good[0]}" if last_good
                else "no epoch was completed, so nothing was saved")
        if started:
            _log_to_file(log, f"interrupted: {kept}")
        raise Interrupted(kept) from None
    finally:
        if board is not None:
            board.close()
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
        if folder is not None:
            folder.release()


def training_batches(config: TrainingConfig, train_df: pd.DataFrame, labels: np.ndarray, encoder: torch.nn.Module,
                     device: torch.device, env: DistEnv = DistEnv()) -> tuple[UniquePlayerBatchSampler, DataLoader]:
    """The training loader of one process: batches of ``rank_batch_size`` pairs of distinct players
    (``UniquePlayerBatchSampler``; call ``sampler.set_epoch`` before each epoch), each image read,
    letterboxed, sharpened, normalised and erased (``train_transform``) in ``num_workers`` processes.
    labels: (len(train_df),) player label of each row. Yields (query (B, 3, H, W), gallery (B, 3, H, W),
    labels (B,)) at the encoder's size and normalisation."""
    sampler = UniquePlayerBatchSampler(labels, rank_batch_size(config, env.world_size), seed=config.seed, rank=env.rank,
                                       world_size=env.world_size, packing=config.batch_packing)
    dataset = PairDataset(image_paths(train_df, config.data_dir), labels,
                          train_transform(encoder.img_size, encoder.mean, encoder.std), prob_flip=config.prob_flip)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda")
    return sampler, loader


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


def rank_batch_size(config: TrainingConfig, world_size: int) -> int:
    """Pairs per batch on each process: ``batch_size`` (``batch_scope`` per_gpu), or ``batch_size`` split
    evenly over the processes (``total``, as the published DataParallel script split it)."""
    if config.batch_scope == "per_gpu":
        return config.batch_size
    if config.batch_size % world_size:
        raise InputError(f"--batch-scope total: --batch-size {config.batch_size} does not split evenly over {world_size} "
                         "processes; choose a multiple of the number of GPUs")
    return config.batch_size // world_size


def _check(config: TrainingConfig) -> None:
    if config.epochs < 0 or config.batch_size < 1 or config.gradient_accumulation < 1:
        raise InputError("--epochs must be >= 0, --batch-size and --gradient-accumulation >= 1")
    if config.logit_scale_init != "model" and not math.isfinite(float(config.logit_scale_init)):
        raise InputError(f"--logit-scale-init must be 'model' or a finite number, got {config.logit_scale_init!r}")
    if not config.rerank and config.best_metric != "map_raw":
        raise InputError(f"--best-metric {config.best_metric} needs the re-ranked scores: set --rerank or --best-metric map_raw")
    if config.resume is not None and config.overwrite:
        raise InputError("--resume continues the run in its folder, --overwrite replaces it: give one of them")


def _recorded(config: C) -> C:
    """The configuration as config.json and the checkpoints keep it: the run's settings, without this
    invocation's actions (loading that config.json with --config starts a new run, not a resume)."""
    return dataclasses.replace(config, resume=None, overwrite=False)


def _resume_config(config: C, state: dict[str, Any]) -> tuple[C, dict[str, tuple[Any, Any]]]:
    """The configuration of a resumed run, checked against the checkpoint's (the truth).

    Unset derived fields (image size, normalisation, run name: None) take the checkpoint's values;
    the run stays in the checkpoint's folder. Returns (configuration, {field: (checkpoint's value,
    this run's)} for every changed field). Raises ``InputError`` naming every field that cannot change
    (see ``RESUMABLE_FIELDS``), for a weights-only checkpoint, and for one holding non-finite values.
    """
    path = Path(config.resume)
    if not isinstance(state.get("config"), dict) or "optimizer" not in state:
        raise InputError(f"--resume {path}: this checkpoint holds no optimiser state (weights only, or not a training "
                         "checkpoint); resume from the run's last.pth")
    saved = state["config"]
    filled = {name: saved[name] for name in ("img_size", "mean", "std") if getattr(config, name) is None and saved.get(name)}
    config = dataclasses.replace(config, **{name: tuple(value) for name, value in filled.items()},
                                 run_name=config.run_name or saved.get("run_name") or path.parent.name)
    current = config_to_dict(config)
    changes = {name: (saved[name], value) for name, value in current.items()
               if name not in ACTION_FIELDS and name in saved and saved[name] != value}
    fixed = [name for name in changes if name not in RESUMABLE_FIELDS]
    if fixed:
        listed = "; ".join(f"--{name.replace('_', '-')} (checkpoint: {changes[name][0]!r}, given: {changes[name][1]!r})"
                           for name in fixed)
        raise InputError(f"--resume {path}: cannot change on resume: {listed}. Leave these out to continue the run, "
                         "or start a new run")
    if config.epochs < int(state["epoch"]):
        raise InputError(f"--resume {path}: --epochs {config.epochs} is fewer than the {state['epoch']} already trained")
    bad = engine.non_finite_tensors({part: state.get(part) for part in ("model", "criterion", "optimizer")})
    if bad:
        raise InputError(f"--resume {path}: the checkpoint holds NaN or infinite values ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); it cannot be continued: start a new run")
    return dataclasses.replace(config, model_path=path.parent.parent, run_name=path.parent.name), changes


def _config_json_disagreement(path: Path, saved: dict[str, Any]) -> list[str]:
    """A note when the run folder's config.json is unreadable or disagrees with the checkpoint's configuration."""
    if not path.is_file():
        return []
    try:
        written = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"{path} is unreadable ({error}); the checkpoint's configuration is used and {path.name} rewritten"]
    if not isinstance(written, dict):
        return [f"{path} holds no configuration; the checkpoint's is used and {path.name} rewritten"]
    differing = sorted(name for name in set(written) | set(saved) if name not in ACTION_FIELDS
                       and written.get(name) != saved.get(name))
    if not differing:
        return []
    shown = ", ".join(f"{name} {written.get(name)!r} (checkpoint: {saved.get(name)!r})" for name in differing[:5])
    return [f"{path} disagrees with the checkpoint in {shown}{' and more' if len(differing) > 5 else ''}; "
            f"the checkpoint's configuration is used and {path.name} rewritten"]


def _decided_on_main(env: DistEnv, work: Callable[[], T]) -> T | None:
    """``work()`` on rank 0 only; when it raises bad input (``InputError``, a file error) rank 0 raises
    that and every other rank an ``InputError`` with its message (none waits for rank 0 forever)."""
    result, refused, text = None, None, None
    if env.is_main:
        try:
            result = work()
        except (InputError, *FILE_ERRORS) as error:
            refused, text = error, message(error)
    if env.is_distributed:
        box = [text]
        torch.distributed.broadcast_object_list(box, src=0)
        text = box[0]
    if refused is not None:
        raise refused
    if text is not None:
        raise InputError(text)
    return result


def _restore(state: dict[str, Any], config: TrainingConfig, model: engine.PairModel, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler | None,
             env: DistEnv) -> tuple[int, dict[str, Any]]:
    """Load a ``last.pth`` (checked by ``_resume_config``) into the run's objects; returns (epochs done, best so far)."""
    try:
        model.encoder.load_state_dict(state["model"])
        model.criterion.load_state_dict(state["criterion"])
    except RuntimeError as error:  # e.g. another number of training players for the ID loss's classifier
        raise InputError(f"--resume {config.resume}: the checkpoint's weights do not fit this run: {error}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    # This run's lr and weight decay (the saved ones, unless changed on resume), on the schedule built
    # from this run's fields: continued at the saved step (the curve may have been stretched by --epochs).
    scheduler.base_lrs = [config.lr for _ in optimizer.param_groups]
    for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["initial_lr"], group["weight_decay"] = base_lr, config.weight_decay
        group["lr"] = base_lr * factor(scheduler.last_epoch)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if len(state["rng"]) == env.world_size:
        engine.set_rng_state(state["rng"][env.rank])
    return int(state["epoch"]), dict(state["best"])


def _gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's random state, rank order (all ranks take part; rank 0 saves them)."""
    state = engine.rng_state()
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
    with atomic_path(run_dir / "metrics.csv") as temporary:
        table.to_csv(temporary, index=False, float_format="%.6f")
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
    file = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)  # no file before the first message
    file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(console)
    log.addHandler(file)
    return log


def _log_to_file(log: logging.Logger, message: str) -> None:
    """``message`` into log.txt only (the console gets it from the script's error line)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _log_header(log: logging.Logger, config: TrainingConfig, env: DistEnv, device: torch.device, encoder: torch.nn.Module,
                criterion: ReidLoss, train_df: pd.DataFrame, query_df: pd.DataFrame, gallery_df: pd.DataFrame, batches: int,
                start_epoch: int) -> None:
    parameters = sum(p.numel() for p in encoder.parameters())
    log.info("%s run %s on %d process(es), device %s; training %s, evaluation %s", "resuming" if start_epoch else "starting",
             config.run_name, env.world_size, device, engine.describe_precision(device, config.mixed_precision),
             engine.describe_precision(device, config.eval_precision))
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
