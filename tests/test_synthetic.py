"""reid.synthetic.twin: the twin's plan (exact real counts at full scale), layout, names, sizes, truth, determinism."""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid.download import DownloadError, read_marker
from reid.layout import TRUTH_NAME
from reid.synthetic.twin import SCALES, contact_sheet, count_table, generate_twin, plan_twin, render_sequence

# The 2023 SynergyReID counts, as printed by the challenge toolkit.
REAL_COUNTS = {
    "train": (436, 8569),
    "test query": (50, 50),
    "test gallery": (50, 910),
    "challenge query": (618, 618),
    "challenge gallery": (618, 9505),
}
FOLDERS = ["reid_training", "reid_test/query", "reid_test/gallery", "reid_challenge/query", "reid_challenge/gallery"]


@pytest.fixture(scope="module")
def small_twin(twin_images) -> Path:
    """The session's small twin (seed 0, drawn by 2 worker processes), as download_data.py writes it."""
    return twin_images


def test_full_plan_has_exactly_the_real_counts():
    plan = plan_twin("full", seed=0)
    table = count_table(plan).set_index("subset")
    assert {name: (row.ids, row.images) for name, row in table.iterrows()} == REAL_COUNTS


@pytest.mark.parametrize("scale", ["small", "full"])
def test_plan_structure(scale):
    plan = plan_twin(scale, seed=3)
    images = plan.images
    # Ids unique across sequences, each id in one sequence only, every id seen in frame 00.
    assert images.groupby("player").sequence.nunique().max() == 1
    assert (images[images.frame == 0].player.nunique()) == images.player.nunique()
    assert images.frame.between(0, 19).all()
    assert not images.duplicated(["player", "frame"]).any()
    # Splits never share a person or a sequence.
    by_split = {s: set(images.player[images.split == s]) for s in ("train", "test", "challenge")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["challenge"])
    assert not (by_split["test"] & by_split["challenge"])
    # Every sequence: two teams, at least one referee; coaches somewhere.
    for seq in plan.sequences:
        roles = [m.role for m in seq.members]
        assert roles.count("team_a") >= 1 and roles.count("team_b") >= 1 and roles.count("referee") >= 1
        for team in ("team_a", "team_b"):
            numbers = [m.number for m in seq.members if m.role == team]
            assert len(numbers) == len(set(numbers)), "jersey numbers are unique within a team"
    assert any(m.role == "coach" for seq in plan.sequences for m in seq.members)
    # Challenge names: a permutation of 0..N-1 over queries and gallery together.
    challenge = images[images.split == "challenge"]
    assert sorted(challenge.number) == list(range(len(challenge)))
    # Enough sequences for the default 10 cross-validation folds (train + test).
    assert images[images.split != "challenge"].sequence.nunique() >= 10
    spec = SCALES[scale]
    assert len(images) == spec.train_images + spec.test_ids + spec.test_gallery + spec.challenge_ids + spec.challenge_gallery


def test_plan_is_deterministic_and_depends_on_the_seed():
    a, b, c = plan_twin("small", 0), plan_twin("small", 0), plan_twin("small", 1)
    pd.testing.assert_frame_equal(a.images, b.images)
    assert not a.images[["player", "frame", "role"]].equals(c.images[["player", "frame", "role"]])


def test_small_twin_layout_names_and_counts(small_twin):
    data_reid = small_twin / "data_reid"
    plan = plan_twin("small", 0)
    for folder in FOLDERS:
        names = sorted(p.name for p in (data_reid / folder).iterdir())
        pattern = r"\d+\.jpeg" if folder.startswith("reid_challenge") else r"\d+_\d+_\d{2}\.jpeg"
        assert names and all(re.fullmatch(pattern, n) for n in names), folder
        assert len(names) == int((plan.images.folder == folder).sum())
        if folder == "reid_test/query":
            assert all(n.endswith("_00.jpeg") for n in names)
        if folder == "reid_test/gallery":
            assert not any(n.endswith("_00.jpeg") for n in names)
    assert sorted(p.name for p in data_reid.iterdir() if not p.name.startswith(".")) == ["reid_challenge", "reid_test", "reid_training"]
    assert read_marker(small_twin) == {"source": "synthetic", "scale": "small", "seed": 0, "version": 1}
    table = count_table(plan).set_index("subset")
    assert table.loc["train", "ids"] == 60 and table.loc["test query", "ids"] == 10 and table.loc["challenge query", "ids"] == 12


def test_small_twin_images_look_like_detection_crops(small_twin):
    paths = sorted((small_twin / "data_reid").rglob("*.jpeg"))
    sizes = np.array([Image.open(p).size for p in paths[::7]])
    widths, heights = sizes[:, 0], sizes[:, 1]
    assert heights.min() >= 40 and heights.max() <= 250
    assert np.percentile(heights, 90) > 2 * np.percentile(heights, 10), "crop size varies"
    aspect = widths / heights
    assert 0.3 < np.median(aspect) < 0.8 and aspect.std() > 0.05, "upright, varying boxes"
    with Image.open(paths[0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB"


def test_challenge_truth_matches_the_anonymous_files(small_twin):
    truth = pd.read_csv(small_twin / TRUTH_NAME)
    assert list(truth.columns) == ["img_id", "img_type", "player"]
    data_reid = small_twin / "data_reid"
    for img_type, folder in (("q", "reid_challenge/query"), ("g", "reid_challenge/gallery")):
        on_disk = sorted(int(p.stem) for p in (data_reid / folder).iterdir())
        assert sorted(truth.img_id[truth.img_type == img_type]) == on_disk
    queries, gallery = truth[truth.img_type == "q"], truth[truth.img_type == "g"]
    assert queries.player.is_unique
    assert set(gallery.player) == set(queries.player), "every challenge query has gallery matches"
    assert not (data_reid / TRUTH_NAME).exists(), "the truth stays outside data_reid"


def test_images_are_identical_whoever_draws_them(small_twin):
    """The files were drawn by 2 worker processes; drawing one sequence here gives the same bytes."""
    plan = plan_twin("small", 0)
    sequence = plan.sequences[1]
    names = plan.images.set_index(["player", "frame"])
    for player, frame, data in render_sequence(0, sequence):
        row = names.loc[(player, frame)]
        assert (small_twin / "data_reid" / row.folder / f"{row.img_id}.jpeg").read_bytes() == data


def test_another_seed_draws_other_images():
    plan = plan_twin("small", 0)

    def draw(seed: int) -> dict:
        return {(p, f): d for p, f, d in islice(render_sequence(seed, plan.sequences[0]), 25)}

    first, again, other = draw(0), draw(0), draw(7)
    assert first == again
    assert all(first[k] != other[k] for k in first)


def test_identities_differ_within_a_team():
    """Teammates share a kit, so other cues must differ: no two people of a sequence look the same."""
    from reid.synthetic.twin import sequence_people

    plan = plan_twin("small", 0)
    for seq in plan.sequences:
        _, people = sequence_people(0, seq)
        looks = {(p.skin, p.hair, p.hair_style, p.shoes, p.number, round(p.width, 3)) for p in people.values()}
        assert len(looks) == len(people)


def test_second_run_does_nothing(small_twin, capsys):
    before = {p: p.stat().st_mtime_ns for p in (small_twin / "data_reid" / "reid_test").rglob("*.jpeg")}
    generate_twin(small_twin, "small", seed=0, workers=2, progress=False)
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (small_twin / "data_reid" / "reid_test").rglob("*.jpeg")} == before


def test_foreign_data_reid_is_kept_without_force(tmp_path):
    (tmp_path / "data_reid").mkdir()
    (tmp_path / "data_reid" / "mine.txt").write_text("keep me")
    with pytest.raises(DownloadError, match="--force"):
        generate_twin(tmp_path, "small", seed=0, workers=1, progress=False)
    assert (tmp_path / "data_reid" / "mine.txt").exists()
    assert not (tmp_path / "data_reid.partial").exists()


def test_contact_sheet(small_twin):
    sheet = contact_sheet(small_twin / "data_reid", plan_twin("small", 0), people=4, frames=5, cell_height=80)
    assert sheet.mode == "RGB" and sheet.width > 5 * 60 and sheet.height > 4 * 80
    assert np.asarray(sheet).std() > 20, "the sheet shows pictures, not a blank page"
