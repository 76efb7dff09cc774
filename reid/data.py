"""Datasets over the DataFrames of ``preprocess_data.py``, image reading and the unique-player batch sampler.

The tables, their splits and the image path of a row come from ``reid.layout``; ``reid.images``
decodes the files.

Training randomness is a function of ``(seed, epoch)`` only: the sampler draws the order and one seed
per image each epoch, and the training dataset derives the partner image, the flip and the
augmentations of an item from that item seed. The batches, and therefore the weights, do not depend
on the number of data-loading workers, and a run resumed after epoch k sees the same data as one that
was never interrupted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from reid.config import PackingName
from reid.errors import InputError
from reid.images import decode_image

# The published shuffle gives up after this many images in a row whose player is already in the batch.
REQUEUE_PATIENCE = 10


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as RGB uint8 (3, H, W); a missing (``FileNotFoundError``) or undecodable
    (``ImageReadError``) file raises naming its path."""
    return torch.from_numpy(decode_image(path).copy()).permute(2, 0, 1)


def player_labels(players: Sequence[int] | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Player ids -> (labels (N,) int64 in [0, P), the P distinct player ids sorted); labels index them."""
    classes, labels = np.unique(np.asarray(players), return_inverse=True)
    return labels.astype(np.int64), classes


class ImageDataset(Dataset):
    """Images in a fixed order for feature extraction: item i = ``transform(read_image(paths[i]))``."""

    def __init__(self, paths: Sequence[str | Path], transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_image(self.paths[index]))


class PairDataset(Dataset):
    """Training pairs: item ``(i, item_seed)`` -> (image i, another image of the same player, label).

    paths: N image files; labels: (N,) int64 class index of each image's player. The partner is drawn
    among the player's other images (the image itself when it is the player's only one); with
    probability ``prob_flip`` both images are flipped horizontally. All of it, augmentations included,
    is drawn from ``item_seed``, so the same key gives the same item in any worker or process.
    Returns two float32 (3, H, W) tensors and a () int64 label.
    """

    def __init__(self, paths: Sequence[str | Path], labels: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor],
                 prob_flip: float = 0.5) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.prob_flip = prob_flip
        order = np.argsort(self.labels, kind="stable")
        starts = np.searchsorted(self.labels[order], np.unique(self.labels))
        self._groups = dict(zip(np.unique(self.labels).tolist(), np.split(order, starts[1:])))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, item_seed = key
        generator = torch.Generator().manual_seed(item_seed)
        label = int(self.labels[index])
        others = self._groups[label][self._groups[label] != index]
        partner = int(others[torch.randint(len(others), (1,), generator=generator)]) if len(others) else index
        flip = bool(torch.rand(1, generator=generator) < self.prob_flip)
        # The v2 transforms draw from the global generator: seed it for this item only.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            query = self.transform(read_image(self.paths[index]))
            gallery = self.transform(read_image(self.paths[partner]))
        if flip:
            query, gallery = TF.horizontal_flip(query), TF.horizontal_flip(gallery)
        return query, gallery, torch.tensor(label)


class UniquePlayerBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches in which no player appears twice (InfoNCE takes every other item as a negative).

    Each epoch (``set_epoch``) the images are shuffled from ``(seed, epoch)`` and packed greedily into
    global batches of ``batch_size * world_size`` distinct players. ``packing``: ``requeue`` (the
    published shuffle) sends an image whose player is already in the batch to the back of the queue
    and ends the epoch after 10 such images in a row; ``carry`` puts it first into the next batch and
    ends when a batch cannot be filled. Either way the images left over are left out of the epoch
    (about as many at 32 pairs; at 128 pairs of 436 players with 12-20 images each, requeue leaves
    out about three times as many). Rank r takes slice r of every global batch, so
    ranks get disjoint shares, the same number of batches, and the players of all ranks' batches are
    distinct together (the loss gathers them). Yields, per batch, a list of ``(image index, item seed)``.
    labels: (N,) player label of each image.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 packing: PackingName = "requeue") -> None:
        if packing not in PACKINGS:
            raise ValueError(f"unknown packing {packing!r}; expected one of {', '.join(PACKINGS)}")
        self.packing = packing
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._plan_cache: tuple[int, list[np.ndarray], np.ndarray] | None = None
        num_players = len(np.unique(self.labels))
        if batch_size < 1 or num_players < batch_size * world_size:
            raise InputError(f"a batch of {batch_size} x {world_size} rank(s) needs as many distinct players; "
                             f"the training data has {num_players}: lower --batch-size")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def global_batches(self) -> tuple[list[np.ndarray], np.ndarray]:
        """This epoch's (global batches of image indices, item seed of every image)."""
        if self._plan_cache is None or self._plan_cache[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(len(self.labels))
            item_seeds = rng.integers(0, 2**62, size=len(self.labels))
            pack = PACKINGS[self.packing]
            self._plan_cache = (self.epoch, pack(order, self.labels, self.batch_size * self.world_size), item_seeds)
        return self._plan_cache[1], self._plan_cache[2]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches, item_seeds = self.global_batches()
        start, stop = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in batches:
            yield [(int(i), int(item_seeds[i])) for i in batch[start:stop]]

    def __len__(self) -> int:
        return len(self.global_batches()[0])


def _pack_requeue(order: np.ndarray, labels: np.ndarray, size: int) -> list[np.ndarray]:
    """The published shuffle: take images in ``order``; one whose player is already in the batch goes to
    the back of the queue; after ``REQUEUE_PATIENCE`` such images in a row, stop. Full batches only."""
    labels = labels.tolist()  # Python ints: fast set membership
    queue = deque(int(i) for i in order)
    batches: list[np.ndarray] = []
    batch: list[int] = []
    players: set[int] = set()
    refused_in_a_row = 0
    while queue and refused_in_a_row < REQUEUE_PATIENCE:
        index = queue.popleft()
        if labels[index] in players:
            queue.append(index)
            refused_in_a_row += 1
            continue
        batch.append(index)
        players.add(labels[index])
        refused_in_a_row = 0
        if len(batch) == size:
            batches.append(np.asarray(batch))
            batch, players = [], set()
    return batches


def _pack_carry(order: np.ndarray, labels: np.ndarray, size: int) -> list[np.ndarray]:
    """Greedy packing of ``order`` into batches of ``size`` distinct labels; an image whose player is
    already in the batch waits (in order) for the next one. Stops when a batch cannot be filled."""
    labels = labels.tolist()  # Python ints: fast set membership
    batches: list[np.ndarray] = []
    waiting: list[int] = []
    position = 0
    while True:
        batch: list[int] = []
        players: set[int] = set()
        still_waiting: list[int] = []
        for index in waiting:
            if len(batch) < size and labels[index] not in players:
                batch.append(index)
                players.add(labels[index])
            else:
                still_waiting.append(index)
        while len(batch) < size and position < len(order):
            index = int(order[position])
            position += 1
            if labels[index] in players:
                still_waiting.append(index)
            else:
                batch.append(index)
                players.add(labels[index])
        if len(batch) < size:
            return batches
        batches.append(np.asarray(batch))
        waiting = still_waiting


PACKINGS: dict[str, Callable[[np.ndarray, np.ndarray, int], list[np.ndarray]]] = {"requeue": _pack_requeue, "carry": _pack_carry}
