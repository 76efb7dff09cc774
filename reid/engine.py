"""The training engine as plain functions: one epoch, feature extraction, schedules, checkpoints.

Checkpoints are plain dicts of state_dicts, numbers, strings and tensors (the training configuration
as a plain dict included), written to a temporary file then renamed (an interruption never leaves a
half-written checkpoint) and read with ``torch.load(..., weights_only=True)``. A state holding a NaN
or infinite tensor is never written.
"""

from __future__ import annotations

import math
import os
import pickle
import random
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from reid.errors import InputError, RunFailure
from reid.models import Encoder, build_model

ScheduleName = Literal["polynomial", "cosine", "linear", "constant"]


class NonFiniteError(RunFailure):
    """Training diverged: the loss, the gradient norm, a weight or a buffer became NaN or infinite."""


class AverageMeter:
    """Running mean of a stream of numbers (``update(value, n)``; ``avg``)."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else float("nan")


class PairModel(nn.Module):
    """Encoder + loss in one module, so that DDP synchronises the loss's own parameters too
    (temperature, classifier). ``forward(query, gallery, labels)`` -> (loss, {term: value})."""

    def __init__(self, encoder: Encoder, criterion: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.criterion = criterion

    def forward(self, query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # One pass over both halves: BatchNorm statistics see the whole batch.
        embeddings = self.encoder(torch.cat([query, gallery]))  # (2B, D)
        query_emb, gallery_emb = embeddings.float().chunk(2)  # (B, D) each
        # The loss in float32 even under mixed precision: bf16 logits lose the small differences.
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.criterion(query_emb, gallery_emb, labels)


# ---------------------------------------------------------------- learning-rate schedules

def lr_factor(step: int, schedule: ScheduleName, warmup_steps: int, total_steps: int, end_factor: float = 0.0,
              power: float = 2.0) -> float:
    """Multiplier of the peak learning rate after ``step`` optimiser steps.

    Linear warm-up from 0 over ``warmup_steps``, then over the remaining steps to ``total_steps``:
    ``polynomial``: end + (1 - end) * (1 - progress) ** power, ending at ``end_factor`` (= lr_end / lr)
    and staying there; ``cosine``: half a cosine to 0; ``linear``: straight to 0; ``constant``: 1.
    (The schedules of the published code, which took them from the transformers library.)
    """
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "polynomial":
        return end_factor + (1.0 - end_factor) * (1.0 - progress) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; expected polynomial, cosine, linear or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleName, warmup_steps: int, total_steps: int,
                    lr_end: float = 1e-5) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over ``lr_factor``; step it once per optimiser step. lr_end: final lr (polynomial)."""
    peak = optimizer.param_groups[0]["lr"]
    factor = partial(lr_factor, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps,
                     end_factor=lr_end / peak if peak > 0 else 0.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- mixed precision

def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16; None (full precision) on CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_grad_scaler(amp_dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", init_scale=2.0**10) if amp_dtype == torch.float16 else None


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


# ---------------------------------------------------------------- training

def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None, device: torch.device, epoch: int,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    gradient_accumulation: int = 1, gradient_clipping: float | None = None,
                    verbose: bool = True, on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """One pass over ``loader`` (batches of (query images, gallery images, labels)).

    model: a ``PairModel`` (or its DDP wrapper) returning (loss, parts). The optimiser (and the
    scheduler) step every ``gradient_accumulation`` batches; gradients are clipped to
    ``gradient_clipping`` (L2 norm) when set. Divergence raises ``NonFiniteError`` naming the epoch and
    the step: a NaN or infinite loss (before it updates anything), gradient norm (before the optimiser
    step; not under fp16, whose scaler skips such steps) or buffer (after each optimiser step: cheap,
    BatchNorm statistics are small), and at the end any non-finite parameter or buffer.
    on_step: called after every batch with (batch number in the epoch from 1, {"loss": this batch's
    loss, "lr": current lr, "<term>": ...}).
    Returns {"loss": mean loss, "lr": learning rate at the end, "<term>": mean of each loss term}.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    meters: dict[str, AverageMeter] = {"loss": AverageMeter()}
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, total=total, desc=f"train {epoch}", disable=not verbose, dynamic_ncols=True, leave=False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    step = 0
    where = lambda: f"epoch {epoch}, step {step}{f' of {total}' if total else ''}"  # noqa: E731
    for step, (query, gallery, labels) in enumerate(bar, start=1):
        query, gallery = query.to(device, non_blocking=True), gallery.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        update = step % gradient_accumulation == 0
        # DDP: synchronise gradients only on the micro-batch that updates the weights
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not update else nullcontext()
        with sync:
            # forward
            with _autocast(device, amp_dtype):
                loss, parts = model(query, gallery, labels)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"the loss is {loss.item()} at {where()}; training stopped")
            # backward
            scaled = loss / gradient_accumulation
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if update:
            # clip, and check the gradient norm: a non-finite one would reach every weight (under fp16 the
            # scaler skips such steps itself and lowers its scale)
            if scaler is not None and gradient_clipping is not None:
                scaler.unscale_(optimizer)
            norm = None
            if gradient_clipping is not None:
                norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm=gradient_clipping)
            elif scaler is None:
                norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
            if scaler is None and not torch.isfinite(norm):
                raise NonFiniteError(f"the gradient norm is {norm.item()} at {where()} (before the optimiser step); "
                                     "training stopped")
            # step
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            _stop_if_non_finite(model.named_buffers(), f"after the optimiser step at {where()}")
        # log
        batch_size = query.shape[0]
        meters["loss"].update(loss.item(), batch_size)
        for name, value in parts.items():
            meters.setdefault(name, AverageMeter()).update(value, batch_size)
        bar.set_postfix(loss=f"{meters['loss'].avg:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if on_step is not None:
            on_step(step, {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], **parts})
    bar.close()
    _stop_if_non_finite([*model.named_parameters(), *model.named_buffers()], f"at the end of {where()}")
    return {name: meter.avg for name, meter in meters.items()} | {"lr": optimizer.param_groups[0]["lr"]}


def non_finite_tensors(state: Any) -> list[str]:
    """Dotted names of the floating-point tensors in ``state`` (a tensor, or nested dicts, lists and
    tuples of them and of other values, e.g. a checkpoint) that hold a NaN or an infinity."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, value in _flatten(state):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            by_device.setdefault(value.device, []).append((name, value))
    bad = []
    for tensors in by_device.values():  # one synchronisation per device
        finite = torch.stack([torch.isfinite(value).all() for _, value in tensors]).tolist()
        bad += [name for (name, _), ok in zip(tensors, finite) if not ok]
    return bad


def _flatten(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted name, leaf) for every leaf of nested dicts, lists and tuples."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), value


def _stop_if_non_finite(named: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
    bad = non_finite_tensors({name.removeprefix("module."): value for name, value in named})
    if bad:
        raise NonFiniteError(f"non-finite values in {_some(bad)} {where}; training stopped")


def _some(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more tensor(s)" if len(names) > shown else "")


# ---------------------------------------------------------------- features

@torch.no_grad()
def extract_features(encoder: nn.Module, loader: Iterable, device: torch.device, flip: bool = False,
                     amp_dtype: torch.dtype | None = None, verbose: bool = False) -> np.ndarray:
    """Embeddings of every image of ``loader`` (batches of (B, 3, H, W) images), in loader order.

    flip: test-time augmentation, the sum of the image's and its mirror image's embeddings.
    Returns (N, D) float32, each row L2-normalised.
    """
    encoder.eval()
    chunks = []
    for images in tqdm(loader, desc="features", disable=not verbose, dynamic_ncols=True, leave=False):
        images = images.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            features = encoder(images).float()  # (B, D)
            if flip:
                features = features + encoder(torch.flip(images, dims=[3])).float()
        chunks.append(torch.nn.functional.normalize(features, dim=1).cpu())
    if not chunks:
        raise ValueError("no images to extract features from")
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with torch.save to a temporary file beside ``path``, then rename it into place.

    A NaN or infinite floating-point tensor anywhere in ``state`` raises ``NonFiniteError`` naming it,
    and nothing is written (the file already at ``path`` is kept)."""
    path = Path(path)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteError(f"non-finite values in {_some(bad)}: {path} not written")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (``weights_only=True``: no code is executed).

    A missing file raises ``FileNotFoundError``; a file that is not a PyTorch checkpoint (truncated,
    empty, a text or other file, one holding Python objects a weights-only load refuses, or a saved
    tensor / list rather than a dict) raises ``InputError`` naming it and what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as error:
        raise InputError(f"{path}: not a readable checkpoint ({_load_problem(error)}); give a best.pth or last.pth "
                         f"written by train_our_post.py") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: a PyTorch file holding a {type(state).__name__}, not a checkpoint (a dict of "
                         f"state_dicts); give a best.pth or last.pth written by train_our_post.py")
    return state


def _load_problem(error: BaseException) -> str:
    """A few words on why torch.load failed (its own messages run over many lines)."""
    text = str(error)
    if isinstance(error, EOFError):
        return "the file ends too early: empty or truncated"
    if "central directory" in text or "PytorchStreamReader" in text:
        return "an incomplete zip archive: truncated or damaged"
    unsupported = next((line.strip() for line in text.splitlines() if "unsupported global" in line.lower()), None)
    if unsupported:
        return f"it holds Python objects a weights-only load refuses, as loading them could run code: {unsupported[:160]}"
    return "not a PyTorch checkpoint: truncated, or a file of another kind"


def load_encoder(checkpoint: str | os.PathLike | dict[str, Any], device: str | torch.device = "cpu") -> tuple[Encoder, dict[str, Any]]:
    """Rebuild a trained encoder from a checkpoint (a path or an already loaded dict).

    The architecture, image size and normalisation come from the training configuration saved in
    the checkpoint; no pretrained weights are fetched. Returns (encoder in eval mode on ``device``,
    that configuration as a plain dict).
    """
    state = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    where = "" if isinstance(checkpoint, dict) else f"{checkpoint}: "  # a loaded dict: the caller names its file
    if "model" not in state or "config" not in state:
        raise InputError(f"{where}not a training checkpoint of this project (no 'model' or 'config' entry)")
    config = dict(state["config"])
    encoder = build_model(config | {"pretrained": False, "pretrained_file": None, "grad_checkpointing": False})
    expected, found = set(encoder.state_dict()), set(state["model"])
    if expected != found:  # another architecture than the configuration says
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        raise InputError(f"{where}its weights do not fit {config.get('model')!r}, the model its configuration names: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    try:
        encoder.load_state_dict(state["model"])
    except RuntimeError as error:  # the same names, other shapes
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise InputError(f"{where}its weights do not fit {config.get('model')!r}, the model its configuration names: "
                         f"{lines[-1][:200]}") from None
    return encoder.to(device).eval(), config


def rng_state() -> dict[str, Any]:
    """The random states of Python, numpy and torch (CPU and CUDA) as checkpoint-safe values."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states saved by ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
