"""The training engine as plain functions: one epoch, schedules, precision, checkpoints.

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
import typing
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from reid.config import Precision, ScheduleName
from reid.errors import InputError, RunFailure
from reid.files import atomic_path
from reid.models import Encoder, build_model, is_open_clip, is_published_layout, published_encoder_weights

PRECISIONS: tuple[Precision, ...] = typing.get_args(Precision)
# The normalisation the published scripts gave every timm model (ImageNet) and every open_clip one (OpenAI).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


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
    (temperature, classifier). ``forward(query, gallery, labels)`` -> (loss, {term: value}).

    loss_under_autocast: compute the loss inside the caller's autocast, as the published fp16 recipe
    did (its logits matmul runs in fp16); False = the loss in float32 whatever the autocast.
    """

    def __init__(self, encoder: Encoder, criterion: nn.Module, loss_under_autocast: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.criterion = criterion
        self.loss_under_autocast = loss_under_autocast

    def forward(self, query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # One pass over both halves: BatchNorm statistics see the whole batch.
        embeddings = self.encoder(torch.cat([query, gallery]))  # (2B, D)
        if self.loss_under_autocast:
            query_emb, gallery_emb = embeddings.chunk(2)  # (B, D) each
            return self.criterion(query_emb, gallery_emb, labels)
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


def schedule_steps(batches_per_epoch: int, epochs: int, warmup_epochs: float,
                   gradient_accumulation: int = 1) -> tuple[int, int]:
    """(warm-up steps, total steps) of the schedule, in optimiser steps, rounded down as the published
    trainer does (``int(batches * epochs / accumulation)``; the warm-up likewise, over optimiser steps)."""
    total = int(batches_per_epoch * epochs / gradient_accumulation)
    warmup = int(batches_per_epoch * warmup_epochs / gradient_accumulation)
    return warmup, max(1, total)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleName, warmup_steps: int, total_steps: int,
                    lr_end: float = 1e-5) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over ``lr_factor``; step it once per optimiser step. lr_end: final lr (polynomial)."""
    peak = optimizer.param_groups[0]["lr"]
    factor = partial(lr_factor, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps,
                     end_factor=lr_end / peak if peak > 0 else 0.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- mixed precision

def autocast_dtype(device: torch.device, precision: Precision = "bf16") -> torch.dtype | None:
    """The autocast dtype of a precision name on ``device``; None = no autocast (full float32).

    ``fp32`` -> None; ``fp16`` -> float16; ``bf16`` -> bfloat16 on GPUs that support it, float16 on
    older GPUs (which then need the gradient scaler). On the CPU always None: CPU autocast is slow.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or device.type != "cuda":
        return None
    if precision == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def describe_precision(device: torch.device, precision: Precision) -> str:
    """What ``precision`` means on ``device``, for logs: e.g. ``bf16 autocast``, ``fp16 autocast + gradient
    scaler (bf16 asked, this GPU has no bf16)``, ``fp32 (no autocast on the CPU)``."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return "fp32" + (f" ({precision} asked: no autocast on the {device.type.upper()})" if precision != "fp32" else "")
    if dtype == torch.bfloat16:
        return "bf16 autocast"
    return "fp16 autocast + gradient scaler" + (" (bf16 asked, this GPU has no bf16)" if precision == "bf16" else "")


def make_grad_scaler(amp_dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", init_scale=2.0**10) if amp_dtype == torch.float16 else None


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> AbstractContextManager:
    """torch's autocast to ``amp_dtype`` on ``device`` (``autocast_dtype``); None = no autocast."""
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
    buffers = [b for b in model.buffers() if b.is_floating_point()]  # updated in place: the list stays current
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
            with autocast(device, amp_dtype):
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
                norm = _total_norm([p.grad for p in parameters if p.grad is not None])
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
            if buffers and not torch.isfinite(torch.cat([b.reshape(-1) for b in buffers])).all():  # one check, one sync
                _stop_if_non_finite(model.named_buffers(), f"after the optimiser step at {where()}")
        # log
        batch_size, loss_value = query.shape[0], loss.item()
        meters["loss"].update(loss_value, batch_size)
        for name, value in parts.items():
            meters.setdefault(name, AverageMeter()).update(value, batch_size)
        bar.set_postfix(loss=f"{meters['loss'].avg:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if on_step is not None:
            on_step(step, {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"], **parts})
    bar.close()
    _stop_if_non_finite([*model.named_parameters(), *model.named_buffers()], f"at the end of {where()}")
    return {name: meter.avg for name, meter in meters.items()} | {"lr": optimizer.param_groups[0]["lr"]}


def _total_norm(gradients: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``gradients`` together (``torch.nn.utils.get_total_norm``, which torch < 2.6 lacks)."""
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(gradients)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients]))


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


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with torch.save to a temporary file beside ``path``, then rename it into place.

    A NaN or infinite floating-point tensor anywhere in ``state`` raises ``NonFiniteError`` naming it,
    and nothing is written (the file already at ``path`` is kept)."""
    path = Path(path)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteError(f"non-finite values in {_some(bad)}: {path} not written")
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (``weights_only=True``: no code is executed).

    mmap: map the tensors from the file instead of reading them (for a look at the configuration only).

    A missing file raises ``FileNotFoundError``; a file that is not a PyTorch checkpoint (truncated,
    empty, a text or other file, one holding Python objects a weights-only load refuses, or a saved
    tensor / list rather than a dict) raises ``InputError`` naming it and what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def load_encoder(checkpoint: str | os.PathLike | dict[str, Any], device: str | torch.device = "cpu",
                 model: str | None = None, img_size: tuple[int, ...] | int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 source: str | os.PathLike | None = None) -> tuple[Encoder, dict[str, Any]]:
    """Rebuild a trained encoder from a checkpoint (a path or an already loaded dict; ``source``: the
    file a loaded dict came from, named in error messages).

    Two layouts: this project's (``{"model": state dict, "config": training configuration, ...}``:
    architecture, image size and normalisation come from the saved configuration) and the published
    code's ``weights_e{n}.pth`` (a plain state dict with keys ``model.*``), which does not say its
    model: ``model`` is then required, the image size is the model's own and the normalisation the
    one the published scripts used (ImageNet for timm, OpenAI's for open_clip). ``model``,
    ``img_size``, ``mean`` and ``std`` override the checkpoint's values when given. No pretrained
    weights are fetched. Returns (encoder in eval mode on ``device``, the configuration as a plain
    dict). A file of neither layout, or weights that do not fit the model, raise ``InputError``
    naming the first mismatching keys.
    """
    name = str(source or ("checkpoint" if isinstance(checkpoint, dict) else checkpoint))
    state = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    overrides = {key: value for key, value in {"model": model, "img_size": img_size, "mean": mean, "std": std}.items()
                 if value is not None}
    if isinstance(state.get("model"), dict) and isinstance(state.get("config"), dict):
        config = dict(state["config"]) | overrides
        weights = state["model"]
    elif is_published_layout(state):
        if model is None:
            raise InputError(f"{name} is a checkpoint of the published code (keys model.*), which does not name its "
                             "model: pass --model (e.g. --model eva02_large_patch14_448.mim_m38m_ft_in22k_in1k, "
                             "or open_clip:ViT-L-14:openai)")
        weights = published_encoder_weights(state, model)
        open_clip_model = is_open_clip(model)
        config = {"model": model, "remove_proj": "backbone.proj" not in weights,
                  "mean": OPENAI_MEAN if open_clip_model else IMAGENET_MEAN,
                  "std": OPENAI_STD if open_clip_model else IMAGENET_STD} | overrides
    else:
        keys = ", ".join(map(str, list(state)[:5]))
        raise InputError(f"{name}: not a training checkpoint of this project (entries 'model' and 'config') nor a "
                         f"published weights_e<n>.pth (keys 'model.*'); its first keys: {keys}")
    try:
        encoder = build_model(config | {"pretrained": False, "pretrained_file": None, "grad_checkpointing": False})
    except InputError as error:  # e.g. a model name this timm does not know: say which checkpoint names it
        raise InputError(f"{name}: {error}") from None
    _load_weights(encoder, weights, name, config["model"])
    config |= {"img_size": list(encoder.img_size), "mean": list(encoder.mean), "std": list(encoder.std)}
    return encoder.to(device).eval(), config


def _load_weights(encoder: Encoder, weights: dict[str, torch.Tensor], name: str, model: str) -> None:
    """``encoder.load_state_dict(weights)``, a mismatch told in two lines with the first keys that differ."""
    expected = encoder.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    reshaped = [f"{key} {tuple(weights[key].shape)} vs {tuple(value.shape)}" for key, value in expected.items()
                if key in weights and weights[key].shape != value.shape]
    if missing or unexpected or reshaped:
        first = lambda keys: ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")  # noqa: E731
        problems = [f"{label}: {first(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("other shape (file vs model)", reshaped)) if keys]
        raise InputError(f"{name} does not fit {model} ({'; '.join(problems)}); check --model (and --img-size for "
                         "position embeddings)")
    encoder.load_state_dict(weights)


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
