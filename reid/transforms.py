"""Image transforms (torchvision.transforms.v2) on uint8 tensors (3, H, W) as ``reid.data`` reads them.

Player crops are tall and thin; the model wants a fixed size. ``Letterbox`` scales a crop to fit
inside the model size keeping its aspect ratio and pads the rest with black, centred, so no player is
stretched (bilinear without antialiasing: within one grey level of the published cv2
``INTER_LINEAR_EXACT``). Training adds ``Sharpen`` (albumentations' ``Sharpen()``, as published) and
random erasing, the paper's two useful augmentations; the horizontal flip is applied by the
training dataset to both images of a pair at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
        # No antialiasing: the published cv2 INTER_LINEAR_EXACT samples the two nearest pixels too.
        image = TF.resize(image, [new_h, new_w], interpolation=v2.InterpolationMode.BILINEAR, antialias=False)
        left, top = (width - new_w) // 2, (height - new_h) // 2
        # padding order: left, top, right, bottom
        return TF.pad(image, [left, top, width - new_w - left, height - new_h - top], fill=self.fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}"


class Sharpen(v2.Transform):
    """albumentations' ``Sharpen`` (the published augmentation) as a torchvision v2 transform.

    With probability ``p``, draw alpha ~ U(alpha) and lightness ~ U(lightness) and filter each channel
    with the 3 x 3 kernel ``(1 - alpha) * identity + alpha * [[-1, -1, -1], [-1, 8 + lightness, -1],
    [-1, -1, -1]]`` (borders reflected without repeating the edge pixel, as cv2's default), then round
    to the nearest integer and clip to [0, 255] for uint8 images (cv2's saturating cast); float images
    (values in [0, 1]) are clipped to [0, 1]. The kernel sums to 1 - alpha * (1 - lightness), so a
    lightness below 1 also darkens. Input (..., C, H, W) uint8 or float; output the same shape and dtype.
    Draws from torch's global generator.
    """

    def __init__(self, alpha: tuple[float, float] = (0.2, 0.5), lightness: tuple[float, float] = (0.5, 1.0),
                 p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha[0] <= alpha[1] <= 1.0:
            raise ValueError(f"alpha must be a range inside [0, 1], got {alpha!r}")
        if not 0.0 <= lightness[0] <= lightness[1]:
            raise ValueError(f"lightness must be a range of non-negative values, got {lightness!r}")
        self.alpha = (float(alpha[0]), float(alpha[1]))
        self.lightness = (float(lightness[0]), float(lightness[1]))
        self.p = float(p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(1).item() >= self.p:
            return {"kernel": None}
        alpha = torch.empty(1).uniform_(*self.alpha).item()
        lightness = torch.empty(1).uniform_(*self.lightness).item()
        return {"kernel": sharpening_kernel(alpha, lightness)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return inpt if params["kernel"] is None else sharpen(inpt, params["kernel"])

    # torchvision < 0.21 calls the same two methods by their former private names.
    _get_params = make_params
    _transform = transform


def sharpening_kernel(alpha: float, lightness: float) -> torch.Tensor:
    """The (3, 3) float32 kernel of ``Sharpen`` for one draw of alpha and lightness."""
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1.0
    effect = torch.full((3, 3), -1.0)
    effect[1, 1] = 8.0 + lightness
    return (1.0 - alpha) * identity + alpha * effect


def sharpen(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter every channel of ``image`` (..., C, H, W), uint8 or float, with the (3, 3) ``kernel``
    (reflect-101 borders); uint8 results are rounded and saturated to [0, 255], float ones clipped to [0, 1]."""
    shape = image.shape
    planes = image.reshape(-1, 1, *shape[-2:]).to(torch.float32)  # (N*C, 1, H, W)
    if min(shape[-2:]) > 1:  # reflect padding needs two pixels; a 1-pixel side has nothing to mirror
        padded = F.pad(planes, (1, 1, 1, 1), mode="reflect")
    else:
        padded = F.pad(planes, (1, 1, 1, 1), mode="replicate")
    filtered = F.conv2d(padded, kernel.to(torch.float32).reshape(1, 1, 3, 3)).reshape(shape)
    if image.dtype == torch.uint8:
        return filtered.round().clamp(0, 255).to(torch.uint8)
    return filtered.clamp(0.0, 1.0).to(image.dtype)


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

    The published pipeline: ``Sharpen()`` with albumentations' defaults (alpha 0.2-0.5, lightness
    0.5-1.0) on the letterboxed uint8 image, erasing (torchvision's defaults) on the normalised one.
    Draws its randomness from torch's global generator (the training dataset seeds it per item).
    """
    return v2.Compose([
        Letterbox(size),
        Sharpen(p=sharpen_prob),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.RandomErasing(p=erase_prob),
    ])
