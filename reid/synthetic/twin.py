"""The synthetic SynergyReID twin: basketball player crops drawn with PIL, offline, deterministic.

Same folders and file names as the real set (``reid_training/{player}_{sequence}_{frame}.jpeg``,
``reid_test/{query,gallery}/...``, anonymous ``reid_challenge/{query,gallery}/{n}.jpeg``), and the
same structure: 20-frame sequences of a group of people (two teams in different kits, referees,
some coaches), each person a new id, frame 00 the query of the test and challenge splits. The
challenge ground truth goes to ``data_dir/synthetic_challenge_truth.csv``, outside ``data_reid``.

Identity is carried by what tells real players apart — kit (shared by a whole team), jersey number
(often unreadable), skin, hair, shoes, socks, accessories, build — and every frame changes what a
detector's crop would change: pose and facing, crop size (about 40-250 px tall) and margins, motion
blur, lighting, the court behind, another person in front, a box cut off at an edge.

Two steps: ``plan_twin(scale, seed)`` decides every id, sequence and frame (cheap; exact real counts
at ``scale="full"``), ``generate_twin`` draws the images (in parallel). Everything is derived from
``seed`` and the image's ids, so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from reid.download import check_replaceable, read_marker, replace_data_folder, write_marker
from reid.files import atomic_path
from reid.layout import (
    CHALLENGE_GALLERY_FOLDER,
    CHALLENGE_QUERY_FOLDER,
    DATA_FOLDER,
    GALLERY,
    IMAGE_SUFFIX,
    QUERY,
    TEST_GALLERY_FOLDER,
    TEST_QUERY_FOLDER,
    TRAIN_FOLDER,
    TRUTH_NAME,
)
from reid.synthetic.draw import Court, Person, Role, encode_jpeg, render_crop, sample_court, sample_person

# Bump when the drawing changes, so that a marker from an older twin does not count as up to date.
TWIN_VERSION = 1
FRAMES_PER_SEQUENCE = 20
Split = Literal["train", "test", "challenge"]


# ----------------------------------------------------------------------------------------------------
# Plan: ids, sequences, frames, file names (no drawing)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwinScale:
    """How many ids and images each subset has (train counts include frame 00)."""

    train_ids: int
    train_images: int
    test_ids: int
    test_gallery: int
    challenge_ids: int
    challenge_gallery: int
    people_per_sequence: int


SCALES = {
    # small: a CPU demo; the missing-frame rates follow the real set (train 1.7 %, test 4 %, challenge 19 %).
    "small": TwinScale(60, 1179, 10, 182, 12, 185, people_per_sequence=6),
    # full: the 2023 SynergyReID counts (toolkit README).
    "full": TwinScale(436, 8569, 50, 910, 618, 9505, people_per_sequence=11),
}


@dataclass(frozen=True)
class Member:
    """One person of a sequence: a new id, a role and (players, referees) a shirt number."""

    player: int
    role: Role
    number: int  # -1: none (coaches)


@dataclass(frozen=True)
class Sequence:
    """A 20-frame sequence: who is in it and in which frames each person is seen."""

    split: Split
    sequence: int
    members: tuple[Member, ...]
    frames: dict[int, tuple[int, ...]] = field(hash=False)  # player -> frames present (0 always)


@dataclass(frozen=True)
class TwinPlan:
    """Everything ``generate_twin`` will draw.

    images: one row per image, columns split, sequence, player, frame, role, folder, img_id (the file
    stem: ``{player}_{sequence}_{frame:02d}`` or the challenge number as text), number (the
    challenge file number, -1 elsewhere).
    """

    scale: str
    seed: int
    sequences: tuple[Sequence, ...]
    images: pd.DataFrame = field(hash=False)


def plan_twin(scale: str = "small", seed: int = 0) -> TwinPlan:
    """Decide ids, sequences, roles, present frames and file names for a twin (no drawing)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    spec = SCALES[scale]
    rng = np.random.default_rng([seed, 1])
    subsets = (
        ("train", spec.train_ids, spec.train_ids * FRAMES_PER_SEQUENCE - spec.train_images),
        ("test", spec.test_ids, spec.test_ids * (FRAMES_PER_SEQUENCE - 1) - spec.test_gallery),
        ("challenge", spec.challenge_ids, spec.challenge_ids * (FRAMES_PER_SEQUENCE - 1) - spec.challenge_gallery),
    )
    sequences = []
    next_player = next_sequence = 0
    for split, n_ids, n_missing in subsets:
        sizes = _sequence_sizes(n_ids, spec.people_per_sequence, rng)
        missing = _missing_frames(n_ids, n_missing, rng)
        index = 0  # of the next person within the split
        for size in sizes:
            members = _members(range(next_player, next_player + size), rng)
            frames = {
                m.player: tuple(f for f in range(FRAMES_PER_SEQUENCE) if f not in missing.get(index + k, ()))
                for k, m in enumerate(members)
            }
            sequences.append(Sequence(split, next_sequence, members, frames))
            next_player += size
            next_sequence += 1
            index += size
    images = _image_table(sequences, rng)
    return TwinPlan(scale, seed, tuple(sequences), images)


def _sequence_sizes(n_ids: int, mean_size: int, rng: np.random.Generator) -> list[int]:
    """Split n_ids into sequences of about mean_size people (+-2), summing exactly to n_ids."""
    n_sequences = max(1, round(n_ids / mean_size))
    sizes = np.full(n_sequences, n_ids // n_sequences)
    sizes[: n_ids % n_sequences] += 1
    low, high = max(3, mean_size - 2), mean_size + 3
    for _ in range(2 * n_sequences):
        i, j = rng.integers(n_sequences, size=2)
        step = int(rng.integers(1, 3))
        if i != j and sizes[i] - step >= low and sizes[j] + step <= high:
            sizes[i] -= step
            sizes[j] += step
    return [int(s) for s in rng.permutation(sizes)]


def _missing_frames(n_ids: int, n_missing: int, rng: np.random.Generator) -> dict[int, set[int]]:
    """Which gallery frames (01-19) are absent, per player index within the split (frame 00 never)."""
    if n_missing < 0:
        raise ValueError("more images than 20 frames per id")
    slots = rng.choice(n_ids * (FRAMES_PER_SEQUENCE - 1), size=n_missing, replace=False)
    missing: dict[int, set[int]] = {}
    for slot in slots.tolist():
        missing.setdefault(slot // (FRAMES_PER_SEQUENCE - 1), set()).add(1 + slot % (FRAMES_PER_SEQUENCE - 1))
    return missing


JERSEY_NUMBERS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 21, 22, 23, 24, 25,
                           30, 31, 32, 33, 34, 35, 40, 41, 42, 44, 45, 50, 51, 52, 55, 77, 88, 91, 99])


def _members(players: range, rng: np.random.Generator) -> tuple[Member, ...]:
    """Roles for a group: referees (1-3), coaches (0-2), the rest split between two teams."""
    size = len(players)
    n_referees = 3 if size >= 11 else 2 if size >= 7 else 1
    n_coaches = int(rng.integers(0, 3)) if size >= 10 else int(size >= 6 and rng.random() < 0.5)
    n_players = size - n_referees - n_coaches
    n_a = (n_players + int(rng.integers(0, 2))) // 2
    roles = ["team_a"] * n_a + ["team_b"] * (n_players - n_a) + ["referee"] * n_referees + ["coach"] * n_coaches
    roles = [roles[i] for i in rng.permutation(size)]
    numbers = {
        "team_a": iter(rng.choice(JERSEY_NUMBERS, size=roles.count("team_a"), replace=False).tolist()),
        "team_b": iter(rng.choice(JERSEY_NUMBERS, size=roles.count("team_b"), replace=False).tolist()),
        "referee": iter(rng.choice(np.arange(10, 80), size=roles.count("referee"), replace=False).tolist()),
    }
    return tuple(Member(p, r, next(numbers[r]) if r in numbers else -1) for p, r in zip(players, roles))


def _image_table(sequences: list[Sequence], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for seq in sequences:
        roles = {m.player: m.role for m in seq.members}
        for player, frames in seq.frames.items():
            for frame in frames:
                if seq.split == "train":
                    folder = TRAIN_FOLDER
                elif seq.split == "test":
                    folder = TEST_QUERY_FOLDER if frame == 0 else TEST_GALLERY_FOLDER
                else:
                    folder = CHALLENGE_QUERY_FOLDER if frame == 0 else CHALLENGE_GALLERY_FOLDER
                rows.append((seq.split, seq.sequence, player, frame, roles[player], folder))
    images = pd.DataFrame(rows, columns=["split", "sequence", "player", "frame", "role", "folder"])
    images["img_id"] = [f"{p}_{s}_{f:02d}" for p, s, f in zip(images.player, images.sequence, images.frame)]
    images["number"] = -1
    # Challenge names are a random permutation, so that file order says nothing about who is who.
    challenge = (images.split == "challenge").to_numpy()
    numbers = rng.permutation(int(challenge.sum()))
    images.loc[challenge, "number"] = numbers
    images.loc[challenge, "img_id"] = numbers.astype(str)
    return images


def count_table(plan: TwinPlan) -> pd.DataFrame:
    """ids and images per subset of a plan (train, test query/gallery, challenge query/gallery)."""
    images = plan.images
    rows = []
    for name, mask in (
        ("train", images.split == "train"),
        ("test query", images.folder == TEST_QUERY_FOLDER),
        ("test gallery", images.folder == TEST_GALLERY_FOLDER),
        ("challenge query", images.folder == CHALLENGE_QUERY_FOLDER),
        ("challenge gallery", images.folder == CHALLENGE_GALLERY_FOLDER),
    ):
        rows.append((name, images.player[mask].nunique(), int(mask.sum())))
    return pd.DataFrame(rows, columns=["subset", "ids", "images"])


# ----------------------------------------------------------------------------------------------------
# Writing the twin
# ----------------------------------------------------------------------------------------------------


def sequence_people(seed: int, sequence: Sequence) -> tuple[Court, dict[int, Person]]:
    """The court and every person's appearance for one sequence."""
    court, kits = sample_court(seed, sequence.sequence)
    return court, {m.player: sample_person(seed, m.player, m.role, m.number, kits) for m in sequence.members}


def render_sequence(seed: int, sequence: Sequence) -> Iterator[tuple[int, int, bytes]]:
    """(player, frame, JPEG bytes) for every image of a sequence."""
    court, people = sequence_people(seed, sequence)
    for player, frames in sequence.frames.items():
        for frame in frames:
            image = render_crop(seed, people, court, player, frame)
            yield player, frame, encode_jpeg(image, np.random.default_rng([seed, 5, player, frame]))


def _write_sequence(task: tuple[int, Sequence, dict[tuple[int, int], str], str]) -> int:
    seed, sequence, paths, root = task
    for player, frame, data in render_sequence(seed, sequence):
        (Path(root) / paths[player, frame]).write_bytes(data)
    return len(paths)


def generate_twin(
    data_dir: str | os.PathLike,
    scale: str = "small",
    seed: int = 0,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the twin to ``data_dir/data_reid`` and its challenge truth to ``data_dir/synthetic_challenge_truth.csv``.

    A second call with the same scale and seed finds the marker and does nothing (says so). The
    images are drawn into a staging folder renamed to ``data_reid`` at the end, so an interrupted run
    leaves no half twin. workers: processes (default: the CPU count); the bytes do not depend on it.
    Returns the data_reid folder.
    """
    data_dir = Path(data_dir)
    final = data_dir / DATA_FOLDER
    wanted = {"source": "synthetic", "scale": scale, "seed": seed, "version": TWIN_VERSION}
    marker = read_marker(data_dir)
    if not force and marker == wanted and (data_dir / TRUTH_NAME).is_file():
        print(f"{final} already holds the synthetic twin (scale {scale}, seed {seed}): nothing to do (--force redoes it)")
        return final

    check_replaceable(data_dir, "synthetic", force)
    plan = plan_twin(scale, seed)
    staged = data_dir / (DATA_FOLDER + ".partial")
    if staged.exists():
        shutil.rmtree(staged)
    for folder in plan.images.folder.unique():
        (staged / folder).mkdir(parents=True, exist_ok=True)
    paths = {(r.player, r.frame): f"{r.folder}/{r.img_id}{IMAGE_SUFFIX}" for r in plan.images.itertuples()}
    tasks = [(seed, seq, {(p, f): paths[p, f] for p, fs in seq.frames.items() for f in fs}, str(staged))
             for seq in plan.sequences]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    bar = tqdm(total=len(plan.images), desc=f"drawing the {scale} twin", unit="img", disable=not progress)
    with bar:
        if workers == 1:
            for task in tasks:
                bar.update(_write_sequence(task))
        else:
            with multiprocessing.Pool(workers) as pool:
                for count in pool.imap_unordered(_write_sequence, tasks):
                    bar.update(count)

    truth = plan.images[plan.images.split == "challenge"]
    truth = pd.DataFrame({"img_id": truth.number.to_numpy(), "img_type": np.where(truth.frame == 0, QUERY, GALLERY),
                          "player": truth.player.to_numpy()}).sort_values(["img_type", "img_id"], ascending=[False, True])
    write_marker(staged, wanted)
    replace_data_folder(data_dir, staged)
    with atomic_path(data_dir / TRUTH_NAME) as temporary:
        truth.to_csv(temporary, index=False)
    print(f"wrote {len(plan.images):,} images to {final} and the challenge truth to {data_dir / TRUTH_NAME}")
    return final


# ----------------------------------------------------------------------------------------------------
# A picture of the twin
# ----------------------------------------------------------------------------------------------------


def contact_sheet(
    data_reid: str | os.PathLike,
    plan: TwinPlan,
    people: int = 8,
    frames: int = 8,
    cell_height: int = 128,
) -> Image.Image:
    """A grid of training crops read from disk: one row per person, its first ``frames`` crops in frame order.

    The rows take a player of each team, a referee and a coach from each of the first training
    sequences in turn, so that several kits and courts show. Each crop is scaled to ``cell_height``
    (aspect kept) and captioned with its native size: the sheet shows what a model sees and how
    small some crops really are.
    """
    images = plan.images[plan.images.split == "train"]
    train_sequences = [s for s in plan.sequences if s.split == "train"]
    wanted = ("team_a", "referee", "team_b", "coach")
    chosen: list[tuple[int, str]] = []
    for k in range(people):
        # Two rows per sequence; when that sequence has nobody in the role, the next one that does,
        # and a player when nobody left has it (a small twin has few coaches).
        start = k // 2
        for role in (wanted[k % len(wanted)], "team_a", "team_b"):
            taken = {player for player, _ in chosen}
            found = next((m.player for seq in train_sequences[start:] + train_sequences[:start]
                          for m in seq.members if m.role == role and m.player not in taken), None)
            if found is not None:
                chosen.append((found, role))
                break
    font = ImageFont.load_default(size=12)
    title, caption, label = 38, 15, 92
    cell_width = int(cell_height * 0.75)
    sheet = Image.new("RGB", (label + frames * (cell_width + 4), title + len(chosen) * (cell_height + caption + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), f"Synthetic SynergyReID twin ({plan.scale}, seed {plan.seed}): one identity per row, its first {frames} crops.\n"
                      "Below each: frame and native size (a frame without a crop is skipped, as in the real data).", fill="black", font=font)
    sequence_of = plan.images.drop_duplicates("player").set_index("player").sequence
    for row, (player, role) in enumerate(chosen):
        y = title + row * (cell_height + caption + 6)
        draw.text((4, y + cell_height // 2 - 14), f"id {player}\n{role.replace('_', ' ')}\nsequence {sequence_of[player]}",
                  fill="black", font=font)
        for col, r in enumerate(images[images.player == player].sort_values("frame").head(frames).itertuples()):
            with Image.open(Path(data_reid) / r.folder / f"{r.img_id}{IMAGE_SUFFIX}") as crop:
                native = crop.size
                width = min(cell_width, max(1, round(native[0] * cell_height / native[1])))
                shown = crop.convert("RGB").resize((width, cell_height), Image.Resampling.BICUBIC)
            x = label + col * (cell_width + 4)
            sheet.paste(shown, (x + (cell_width - width) // 2, y))
            draw.text((x, y + cell_height + 1), f"f{r.frame:02d} {native[0]}x{native[1]}", fill=(70, 70, 70), font=font)
    return sheet
