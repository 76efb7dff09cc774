"""Image transforms (torchvision.transforms.v2) on uint8 tensors (3, H, W) as ``reid.data`` reads them.

Player crops are tall and thin; the model wants a fixed size. ``Letterbox`` scales a crop to fit
inside the model size keeping its aspect ratio and pads the rest with black, centred, so no player is
stretched. Training adds sharpening and random erasing (the paper's two useful augmentations); the
horizontal flip is applied by the training dataset to both images of a pair at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class Letterbox(nn.Module):
    """Resize to fit inside ``size`` = (height, width) keeping the aspect ratio, pad centred with ``fill``.

    Input (C, h, w) tensor (uint8 or float); output (C, height, width), same dtype.
    """

    def __init__(self, size: tuple[int, int], fill: float = 0) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.fill = fill

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = self.size
        h, w = image.shape[-2:]
        scale = min(height / h, width / w)
        new_h = min(height, max(1, round(h * scale)))
        new_w = min(width, max(1, round(w * scale)))
        image = TF.resize(image, [new_h, new_w], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        left, top = (width - new_w) // 2, (height - new_h) // 2
        # padding order: left, top, right, bottom
        return TF.pad(image, [left, top, width - new_w - left, height - new_h - top], fill=self.fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}"


def eval_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """uint8 (3, h, w) -> float32 (3, height, width): letterbox, then normalise."""
    return v2.Compose([
        Letterbox(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


def train_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                    sharpen_prob: float = 0.5, erase_prob: float = 0.5) -> v2.Compose:
    """uint8 (3, h, w) -> float32 (3, height, width): letterbox, random sharpening, normalise, random erasing.

    Draws its randomness from torch's global generator (the training dataset seeds it per item).
    """
    return v2.Compose([
        Letterbox(size),
        v2.RandomAdjustSharpness(sharpness_factor=2.0, p=sharpen_prob),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.RandomErasing(p=erase_prob),
    ])
