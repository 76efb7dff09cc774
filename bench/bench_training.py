"""Training throughput and peak memory of an encoder with the paper's loss, on random images (no data).

Examples:
    python bench/bench_training.py --model vit_base_patch16_224 --batch-size 64        # a GPU, bf16/fp16 autocast
    python bench/bench_training.py --model test_resnet --img-size 48 24 --device cpu --steps 5
    python bench/bench_training.py --model open_clip:ViT-L-14:openai --grad-checkpointing --batch-size 32

Prints images/s (two images per pair: forward + backward + AdamW step) and the peak memory of the
device (GPU) or of the process (CPU). Random initialisation: nothing is downloaded.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import Precision, parse  # noqa: E402
from reid.engine import PairModel, autocast_dtype, build_scheduler, make_grad_scaler, train_one_epoch  # noqa: E402
from reid.losses import ReidLoss  # noqa: E402
from reid.models import build_model  # noqa: E402


@dataclass
class Configuration:
    """Benchmark settings."""

    model: str = "vit_base_patch16_224"
    """timm name or open_clip:<name>:<tag> (random initialisation)."""
    img_size: tuple[int, ...] | None = None
    """Input size (one int or height and width); None = the model's own."""
    batch_size: int = 64
    """Pairs per step."""
    steps: int = 20
    """Timed optimiser steps (after 3 warm-up steps)."""
    loss: str = "infonce"
    """Loss terms."""
    mixed_precision: Precision = "bf16"
    """Training precision on GPUs: bf16 (fp16 where unsupported), fp16 (the published recipe) or fp32."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Device to run on."""


def main(config: Configuration) -> None:
    device = torch.device(config.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    encoder = build_model({"model": config.model, "img_size": config.img_size, "grad_checkpointing": config.grad_checkpointing})
    model = PairModel(encoder, ReidLoss(config.loss, encoder.embed_dim, num_classes=config.batch_size),
                      loss_under_autocast=config.mixed_precision == "fp16").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    scheduler = build_scheduler(optimizer, "constant", warmup_steps=0, total_steps=config.steps)
    amp_dtype = autocast_dtype(device, config.mixed_precision)
    scaler = make_grad_scaler(amp_dtype)
    shape = (config.batch_size, 3, *encoder.img_size)
    batch = (torch.randn(shape, device=device), torch.randn(shape, device=device), torch.arange(config.batch_size, device=device))

    def steps(count: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train_one_epoch(model, [batch] * count, optimizer, scheduler, device, epoch=1, scaler=scaler, amp_dtype=amp_dtype,
                        verbose=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    steps(3)  # warm-up: kernels, allocator, cudnn autotuning
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = steps(config.steps)
    images = 2 * config.batch_size * config.steps
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    parameters = sum(p.numel() for p in encoder.parameters()) / 1e6
    print(f"model {config.model} ({parameters:.1f} M parameters), image {'x'.join(map(str, encoder.img_size))}, "
          f"batch {config.batch_size} pairs, {device}, autocast {amp_dtype}, grad checkpointing {config.grad_checkpointing}")
    print(f"{images / seconds:.1f} images/s ({seconds / config.steps * 1000:.1f} ms per step), "
          f"peak {'GPU' if device.type == 'cuda' else 'process'} memory {peak:.2f} GiB")


if __name__ == "__main__":
    main(parse(Configuration))
