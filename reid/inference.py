"""Inference: images -> features (one implementation), and a trained encoder for other programs.

``extract_features`` is the feature maths every stage uses (the encoder, optional flip test-time
augmentation, the evaluation precision, L2 normalisation: ``FeatureModel``); ``features_for_frame``
runs it on the images of a table (sharded over the ranks under DDP, gathered on every rank), and
``ReidEncoder.embed`` on crops of any kind:

    import reid
    from reid.retrieval.distance import squared_euclidean
    encoder = reid.load_encoder("model/<run>/best.pth")          # device="auto": the first GPU, else the CPU
    features = encoder.embed(["a.jpeg", pil_image, rgb_array])  # (3, D) float32, rows L2-normalised
    distances = squared_euclidean(features, features)            # (3, 3)

``embed`` computes exactly what ``predict.py`` and ``evaluate.py`` compute for the same images: the
same decoding, letterbox to the checkpoint's image size, the checkpoint's normalisation, the same
``extract_features``. ``encoder.preprocess`` is that transform alone (crop -> model input),
``encoder.feature_model()`` the torch module from model input to features (what ``export.py`` writes
as ONNX). Features are meant for the squared Euclidean distance (or, the same order, the cosine
similarity). Where they are computed: ``reid.devices.resolve_device``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from reid import engine
from reid.config import Precision, TrainingConfig
from reid.crops import ImageInput, read_crop
from reid.data import ImageDataset
from reid.devices import resolve_device
from reid.engine import PRECISIONS
from reid.errors import InputError
from reid.images import ImageReadError
from reid.layout import image_paths
from reid.models import Encoder
from reid.transforms import eval_transform

DISTANCE = "squared_euclidean"  # what the features are meant for (DESIGN: features L2-normalised, squared Euclidean)


class Preprocess:
    """One crop (file path, PIL image or (H, W, 3) uint8 RGB array) -> float32 (3, height, width):
    the model's input, as the evaluation makes it (letterbox to ``img_size``, pixels to [0, 1],
    normalised with ``mean`` and ``std``). ``transform`` is the same on a uint8 (3, H, W) tensor."""

    def __init__(self, img_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> None:
        self.img_size = tuple(img_size)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.transform = eval_transform(self.img_size, self.mean, self.std)

    def __call__(self, image: ImageInput) -> torch.Tensor:
        return self.transform(read_crop(image))

    def __repr__(self) -> str:
        return f"Preprocess(img_size={self.img_size}, mean={self.mean}, std={self.std})"


class FeatureModel(nn.Module):
    """(B, 3, H, W) preprocessed images -> (B, D) float32 L2-normalised features; with ``flip``, the
    sum of the image's and its mirror image's embeddings, normalised. The feature maths of every stage."""

    def __init__(self, encoder: nn.Module, flip: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.flip = flip

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) float32 embeddings before normalisation (what runs under the evaluation autocast)."""
        features = self.encoder(images).float()  # (B, D)
        if self.flip:
            features = features + self.encoder(torch.flip(images, dims=[3])).float()
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embeddings(images), dim=1)


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: Iterable, device: torch.device, flip: bool = False,
                     amp_dtype: torch.dtype | None = None, verbose: bool = False) -> np.ndarray:
    """Embeddings of every image of ``loader`` (batches of (B, 3, H, W) images), in loader order.

    flip: test-time augmentation, the sum of the image's and its mirror image's embeddings.
    amp_dtype: the evaluation autocast (``reid.engine.autocast_dtype``); None = float32.
    Returns (N, D) float32, each row L2-normalised.
    """
    model = FeatureModel(encoder, flip).eval()
    chunks = []
    for images in tqdm(loader, desc="features", disable=not verbose, dynamic_ncols=True, leave=False):
        images = images.to(device, non_blocking=True)
        with engine.autocast(device, amp_dtype):
            features = model.embeddings(images)  # (B, D)
        chunks.append(F.normalize(features, dim=1).cpu())
    if not chunks:
        raise ValueError("no images to extract features from")
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def features_for_frame(encoder: Encoder, df: pd.DataFrame, data_dir: str | Path, device: torch.device,
                       batch_size: int = 64, num_workers: int = 0, flip: bool = False,
                       amp_dtype: torch.dtype | None = None, verbose: bool = False,
                       rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Features of the images of ``df`` (table rows with ``folder`` and ``img_id``), in row order.

    Letterbox + normalisation at the encoder's size and statistics. Under DDP (world_size > 1) each
    rank encodes a contiguous share and the shares are gathered, so every rank gets all rows.
    Returns (len(df), D) float32, L2-normalised.
    """
    paths = image_paths(df, data_dir)
    shares = np.array_split(np.arange(len(paths)), world_size)
    mine = [paths[i] for i in shares[rank]]
    dataset = ImageDataset(mine, eval_transform(encoder.img_size, encoder.mean, encoder.std))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    features = extract_features(encoder, loader, device, flip=flip, amp_dtype=amp_dtype, verbose=verbose) if mine else None
    if world_size == 1:
        return features
    gathered: list[np.ndarray | None] = [None] * world_size
    dist.all_gather_object(gathered, features)
    return np.concatenate([part for part in gathered if part is not None])


def check_finite_features(features: np.ndarray, checkpoint: str | Path) -> np.ndarray:
    """``features`` (N, D) unchanged; ``InputError`` naming ``checkpoint`` when a row holds NaN or inf
    (no distance, score or matrix is ever computed from them)."""
    bad = int((~np.isfinite(features)).any(axis=1).sum())
    if bad:
        raise InputError(f"{checkpoint}: the features of {bad} of {len(features)} images hold NaN or infinite values: "
                         "its weights are broken (a diverged run?), or they overflow in half precision (then try "
                         "without mixed precision)")
    return features


class ReidEncoder:
    """A trained re-identification encoder with everything needed to embed crops the way it was evaluated.

    Attributes: ``module`` (the torch encoder, eval mode, on ``device``), ``config`` (the training
    configuration the checkpoint carries, a plain dict), ``checkpoint`` (its path, when loaded from
    one), ``precision``, ``flip``, ``preprocess``; ``embed_dim``, ``img_size`` (height, width),
    ``mean``, ``std``. Calling the object is ``embed``.
    """

    distance = DISTANCE

    def __init__(self, module: Encoder, config: dict[str, Any], device: torch.device, precision: Precision = "fp32",
                 flip: bool = False, checkpoint: Path | None = None) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.module = module.eval()
        self.config = config
        self.device = device
        self.precision = precision
        self.flip = flip
        self.checkpoint = checkpoint
        self.preprocess = Preprocess(module.img_size, module.mean, module.std)

    @functools.cached_property
    def training_config(self) -> TrainingConfig:
        """``config`` as the typed training configuration (fields a published checkpoint lacks: the defaults)."""
        return TrainingConfig.from_checkpoint(self.config, self.checkpoint or "checkpoint")

    @property
    def embed_dim(self) -> int:
        return int(self.module.embed_dim)

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.module.img_size)

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.module.mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.module.std)

    def embed(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, *, flip: bool | None = None,
              num_workers: int = 0, verbose: bool = False) -> np.ndarray:
        """Features of ``images``: file paths, PIL images, (H, W, 3) uint8 RGB arrays (mixed freely),
        one of them, or an (N, H, W, 3) uint8 array. Returns (N, embed_dim) float32, rows L2-normalised,
        in the order given. flip: None = this encoder's ``flip``. A file that cannot be decoded raises
        ``reid.images.ImageReadError`` naming it, an array of the wrong kind ``InputError`` naming its
        position (also from loader processes, ``num_workers`` > 0: the error, not a traceback)."""
        items = as_image_list(images)
        if not items:
            raise InputError("no images to embed")
        loader = DataLoader(_CropDataset(items, self.preprocess), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=_collate, pin_memory=self.device.type == "cuda")
        return extract_features(self.module, _Checked(loader), self.device, flip=self.flip if flip is None else flip,
                                amp_dtype=engine.autocast_dtype(self.device, self.precision), verbose=verbose)

    __call__ = embed

    def feature_model(self, flip: bool | None = None) -> FeatureModel:
        """The torch module preprocessed images (B, 3, H, W) -> features (B, D), L2-normalised (full precision)."""
        return FeatureModel(self.module, self.flip if flip is None else flip).eval()

    def __repr__(self) -> str:
        return (f"ReidEncoder({self.config.get('model')!r}, embed_dim={self.embed_dim}, img_size={self.img_size}, "
                f"device={self.device}, precision={self.precision!r}, flip={self.flip}, checkpoint={self.checkpoint})")


def load_encoder(checkpoint: str | os.PathLike, device: str | torch.device = "auto", *, model: str | None = None,
                 img_size: int | tuple[int, ...] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, precision: Precision = "fp32", flip: bool | None = None) -> ReidEncoder:
    """Load a trained checkpoint as a ``ReidEncoder``, its training configuration attached.

    device: ``auto`` (the first GPU when there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:1``, ...
    (``reid.devices.resolve_device``)
    model, img_size, mean, std: None = as the checkpoint's configuration says; given = that value
    instead (``reid.engine.load_encoder``: a published ``weights_e{n}.pth`` carries no configuration
    and needs ``model``). precision: the evaluation precision on GPUs (fp32, bf16 or fp16 autocast,
    ``reid.engine.autocast_dtype``; the CPU always computes in fp32).
    flip: flip test-time augmentation; None = as the model was evaluated in training (``flip_test``).
    A missing checkpoint raises ``FileNotFoundError``, an unreadable or foreign one ``InputError`` naming it.
    """
    torch_device = resolve_device(device)
    module, config = engine.load_encoder(checkpoint, torch_device, model=model, img_size=img_size, mean=mean, std=std)
    return ReidEncoder(module, config, torch_device, precision=precision,
                       flip=TrainingConfig.from_checkpoint(config, checkpoint).flip_test if flip is None else flip,
                       checkpoint=Path(checkpoint))


@dataclass(kw_only=True)
class EncoderOptions:
    """The configuration fields of a script that embeds crops with a checkpoint (search.py, cluster.py):
    its Configuration subclasses this one."""

    flip: bool | None = None
    """Flip test-time augmentation; None = as in training (flip_test)."""
    model: str | None = None
    """Model name, for checkpoints that carry no configuration (published weights); None = the checkpoint's."""
    img_size: tuple[int, ...] | None = None
    """Input size (one int or height width); None = the checkpoint's."""
    mean: tuple[float, float, float] | None = None
    """Per-channel normalisation mean; None = the checkpoint's."""
    std: tuple[float, float, float] | None = None
    """Per-channel normalisation std; None = the checkpoint's."""
    eval_precision: Precision = "fp32"
    """Feature precision on GPUs: fp32 (as the published evaluator), or bf16 / fp16 autocast (faster, slightly different features)."""
    batch_size: int = 64
    """Crops per batch when extracting features."""
    num_workers: int = 2
    """Data-loading processes (0 = decode the crops in the main process)."""
    device: str = "auto"
    """auto (the first GPU if any, else CPU), cpu, cuda, cuda:1, ..."""
    verbose: bool = True
    """Progress bars."""

    def load_encoder(self, checkpoint: str | os.PathLike) -> ReidEncoder:
        """``load_encoder`` with these options."""
        return load_encoder(checkpoint, self.device, model=self.model, img_size=self.img_size, mean=self.mean,
                            std=self.std, precision=self.eval_precision, flip=self.flip)

    @property
    def embed_options(self) -> dict[str, Any]:
        """``ReidEncoder.embed``'s keyword arguments from these options."""
        return {"batch_size": self.batch_size, "num_workers": self.num_workers, "verbose": self.verbose}


def as_image_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """One crop or many -> a list of crops (an (N, H, W, 3) array -> its N images)."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return [images] if images.ndim == 3 else list(images)
    return list(images)


class _CropDataset(Dataset):
    """Item i = (preprocessed crop i, None) or, when it cannot be read, (zeros, the error): a loader
    process hands the error back instead of a traceback, and ``_Checked`` raises it."""

    def __init__(self, items: Sequence[ImageInput], preprocess: Preprocess) -> None:
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Exception | None]:
        item = self.items[index]
        try:
            return self.preprocess(item), None
        except (InputError, ImageReadError, FileNotFoundError) as error:
            if isinstance(error, InputError) and not isinstance(item, (str, os.PathLike)):
                error = InputError(f"image {index} of the list: {error}")
            return torch.zeros(3, *self.preprocess.img_size), error


def _collate(items: list[tuple[torch.Tensor, Exception | None]]) -> tuple[torch.Tensor, list[Exception | None]]:
    return torch.stack([image for image, _ in items]), [error for _, error in items]


class _Checked:
    """The loader's image batches; a crop that could not be read raises its error here."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:  # progress bars know the total
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for images, errors in self.loader:
            error = next((e for e in errors if e is not None), None)
            if error is not None:
                raise error
            yield images
