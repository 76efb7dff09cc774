"""Player crops from anywhere: folders in any layout, files, PIL images or arrays -> RGB uint8 tensors.

The stage scripts read the SynergyReID layout through ``reid.layout``; a user's own crops (a tracker's
output, one game's detections) come as folders, files or images in memory. ``find_images`` lists the
image files of folders (recursively) and files; ``read_crop`` turns one crop of any accepted kind
into the (3, H, W) uint8 tensor that ``reid.data.read_image`` gives for a file, so the evaluation
transform sees exactly the same pixels whichever way a crop arrives.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from reid.errors import InputError
from reid.images import decode_image

# What PIL decodes and crops are stored as; other files in a folder are ignored.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def natural_key(path: Path) -> list:
    """Sort key that orders ``2.jpeg`` before ``10.jpeg`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def find_images(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The image files of ``sources``: each a file (taken as is) or a folder (its image files, in
    subfolders too, hidden ones skipped, in natural order). Sources keep their order; a file named
    twice is kept once. A missing source or a folder without images raises ``InputError``."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[Path] = []
    seen: set[Path] = set()
    for source in map(Path, sources):
        if source.is_dir():
            files = sorted((p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(source).parts)), key=natural_key)
            if not files:
                raise InputError(f"{source}: no images in this folder or its subfolders "
                                 f"(looked for {', '.join(IMAGE_SUFFIXES)})")
        elif source.is_file():
            files = [source]
        else:
            raise InputError(f"{source}: no such file or folder")
        for file in files:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                found.append(file)
    if not found:
        raise InputError("no images given")
    return found


def read_crop(image: ImageInput) -> torch.Tensor:
    """One crop -> RGB uint8 (3, H, W): a file path (decoded as ``reid.data.read_image`` does), a PIL
    image (converted to RGB), or an (H, W, 3) uint8 RGB array (OpenCV's BGR: pass ``image[..., ::-1]``).
    A file that cannot be decoded raises ``ImageReadError`` naming it (a missing one ``FileNotFoundError``),
    an array of another shape or type or any other object ``InputError``."""
    if isinstance(image, (str, os.PathLike)):
        pixels = decode_image(image, data_set=False)  # a user's crop: no hint about the data set's --verify-images
    elif isinstance(image, Image.Image):
        pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise InputError(f"an image array must be H x W x 3 uint8 RGB, got shape {image.shape} and dtype {image.dtype}")
        pixels = image
    else:
        raise InputError(f"cannot read a crop from a {type(image).__name__}: give a file path, a PIL image "
                         "or an H x W x 3 uint8 RGB array")
    return torch.from_numpy(np.ascontiguousarray(pixels).copy()).permute(2, 0, 1)

