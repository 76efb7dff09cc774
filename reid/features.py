"""Saved features: one ``.npz`` file per model and split, written by ``predict.py``.

The file holds plain arrays (``numpy.load(path)`` reads it without pickle):

=============  ===============  ====================================================================
key            shape, dtype     meaning
=============  ===============  ====================================================================
``features``   (N, D) float32   one L2-normalised embedding per image
``img_id``     (N,) str         the image file stem (``123_4_05`` on the test split, ``6042`` on the challenge)
``player``     (N,) int64       the player id (test split); the file number (challenge: no identities)
``img_type``   (N,) str         ``q`` (query) or ``g`` (gallery)
``folder``     (N,) str         folder under ``data_dir/data_reid`` (``reid_test/query``, ...)
``split``      () str           ``test``, ``challenge`` or ``fold<k>`` (a cross-validation fold)
``checkpoint`` () str           the checkpoint the features come from ("" when unknown)
``flip``       () bool          whether flip test-time augmentation was used
=============  ===============  ====================================================================

Rows are in evaluation order: the queries first, then the gallery, each sorted by (player, frame)
on the test split and by file number on the challenge. So rows ``img_type == "q"`` are the rows of
the split's distance matrix and rows ``img_type == "g"`` its columns.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reid.errors import InputError
from reid.files import atomic_path

FEATURE_KEYS = ("features", "img_id", "player", "img_type", "folder", "split", "checkpoint", "flip")


class FeatureFileError(InputError):
    """A features file that does not follow the format above (message: the file and what is wrong)."""


@dataclass
class FeatureSet:
    """Features of the images of one split with their identities (see the module docstring for each field)."""

    features: np.ndarray
    img_id: np.ndarray
    player: np.ndarray
    img_type: np.ndarray
    folder: np.ndarray
    split: str
    checkpoint: str = ""
    flip: bool = False

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.img_id = np.asarray(self.img_id).astype(str)
        self.player = np.asarray(self.player).astype(np.int64)
        self.img_type = np.asarray(self.img_type).astype(str)
        self.folder = np.asarray(self.folder).astype(str)
        self.split, self.checkpoint, self.flip = str(self.split), str(self.checkpoint), bool(self.flip)
        if self.features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {self.features.shape}")
        n = len(self.features)
        for name in ("img_id", "player", "img_type", "folder"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have one entry per feature row ({n}), got shape {getattr(self, name).shape}")
        unknown = sorted(set(self.img_type.tolist()) - {"q", "g"})
        if unknown:
            raise ValueError(f"img_type must be 'q' or 'g', found {unknown}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, features: np.ndarray, split: str, checkpoint: str | os.PathLike = "",
                   flip: bool = False) -> FeatureSet:
        """Rows of a split's DataFrame (columns img_id, player, img_type, folder) + their (N, D) features."""
        return cls(features, frame["img_id"].to_numpy(), frame["player"].to_numpy(), frame["img_type"].to_numpy(),
                   frame["folder"].to_numpy(), split, str(checkpoint), flip)

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, rows: np.ndarray) -> FeatureSet:
        """The rows selected by a boolean mask or an index array, same metadata."""
        return FeatureSet(self.features[rows], self.img_id[rows], self.player[rows], self.img_type[rows],
                          self.folder[rows], self.split, self.checkpoint, self.flip)

    @property
    def query(self) -> FeatureSet:
        """The query rows (the distance matrix's rows, in order)."""
        return self.subset(self.img_type == "q")

    @property
    def gallery(self) -> FeatureSet:
        """The gallery rows (the distance matrix's columns, in order)."""
        return self.subset(self.img_type == "g")

    def frame(self) -> pd.DataFrame:
        """The metadata as a DataFrame (img_id, player, img_type, folder), one row per feature row."""
        return pd.DataFrame({"img_id": self.img_id, "player": self.player, "img_type": self.img_type, "folder": self.folder})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` (uncompressed) to a temporary file beside ``path``, then rename it into place."""
        path = Path(path)
        with atomic_path(path) as temporary, open(temporary, "wb") as file:  # a file: numpy appends ".npz" to names
            np.savez(file, features=self.features, img_id=self.img_id, player=self.player, img_type=self.img_type,
                     folder=self.folder, split=np.array(self.split), checkpoint=np.array(self.checkpoint),
                     flip=np.array(self.flip))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureSet:
        """Read a file written by ``save``; a missing key or inconsistent shape raises ``FeatureFileError`` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"features file not found: {path}")
        with open(path, "rb") as file:
            if file.read(4) != b"PK\x03\x04":  # numpy would try it as a pickle, and say so
                raise FeatureFileError(f"{path}: not an .npz file (a features file of predict.py is a zip of arrays)")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in FEATURE_KEYS if key not in data.files]
                if missing:
                    raise FeatureFileError(f"{path}: missing key(s) {', '.join(missing)}; a features file of predict.py "
                                           f"has {', '.join(FEATURE_KEYS)}")
                values = {key: data[key] for key in FEATURE_KEYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            if isinstance(error, FeatureFileError):
                raise
            raise FeatureFileError(f"{path}: not a readable .npz features file ({error})") from None
        try:
            return cls(**{key: (value.item() if value.ndim == 0 else value) for key, value in values.items()})
        except ValueError as error:
            raise FeatureFileError(f"{path}: {error}") from None
