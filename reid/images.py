"""Image files: decoding one, and checking a whole data set (no torch).

Where a table row's image is: ``reid.layout.image_path``. A missing image raises
``FileNotFoundError``, one that cannot be decoded ``ImageReadError`` (a
``RunFailure``: the stage stops with one line naming the file); ``unreadable_images`` lists every
such file of a data set at once (``preprocess_data.py --verify-images``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from reid.errors import RunFailure

VERIFY_HINT = "python preprocess_data.py --verify-images lists every unreadable image"


class ImageReadError(RunFailure):
    """An image file exists but cannot be decoded (truncated, empty, not an image)."""


def decode_image(path: str | os.PathLike, data_set: bool = True) -> np.ndarray:
    """An image file as RGB uint8 pixels (H, W, 3); a missing or undecodable file raises naming its path
    (data_set: the error of an undecodable file points to ``--verify-images``, for the data set's images)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path} (if the image folders changed, run preprocess_data.py again)")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot decode image {path}: {_reason(path, error)}; replace or remove the file"
                             + (f" ({VERIFY_HINT})" if data_set else "")) from None


def unreadable_images(paths: Sequence[str | os.PathLike], workers: int | None = None,
                      progress: bool = True) -> list[tuple[Path, str]]:
    """Decode every image of ``paths`` and return (path, reason) for each one that is missing, empty or
    undecodable, in the given order. Threads (``workers``, default one per CPU core) decode in
    parallel: Pillow releases the GIL while it decodes."""
    paths = [Path(p) for p in paths]

    def problem(path: Path) -> str | None:
        if not path.is_file():
            return "file not found"
        try:
            with Image.open(path) as image:
                image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return _reason(path, error)
        return None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        problems = list(tqdm(pool.map(problem, paths), total=len(paths), desc="verifying images", unit="image",
                             disable=not progress, leave=False))
    return [(path, reason) for path, reason in zip(paths, problems) if reason is not None]


def _reason(path: Path, error: BaseException) -> str:
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return str(error).replace(f" {str(path)!r}", "").replace(str(path), "the file") or type(error).__name__
