"""reid.catalog and preprocess_data.py: the DataFrame contracts, folds grouped by sequence, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from script_cases import case, run_cases, run_here

from reid.catalog import CatalogError, challenge_frame, count_table, format_count_table, training_frame

REPO = Path(__file__).resolve().parents[1]


def make_images(data_reid: Path, n_train_sequences: int = 12, people: int = 3, frames: int = 20) -> None:
    """Empty files with SynergyReID names: the catalog reads names only."""
    player = 0
    for sequence in range(n_train_sequences):
        for _ in range(people):
            for frame in range(frames):
                path = data_reid / "reid_training" / f"{player}_{sequence}_{frame:02d}.jpeg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            player += 1
    for sequence in (100, 101):
        for _ in range(people):
            (data_reid / "reid_test" / "query").mkdir(parents=True, exist_ok=True)
            (data_reid / "reid_test" / "gallery").mkdir(parents=True, exist_ok=True)
            (data_reid / "reid_test" / "query" / f"{player}_{sequence}_00.jpeg").touch()
            for frame in range(1, frames):
                (data_reid / "reid_test" / "gallery" / f"{player}_{sequence}_{frame:02d}.jpeg").touch()
            player += 1
    for folder, numbers in (("query", [3, 20, 100]), ("gallery", [0, 1, 2, 7, 10, 11])):
        (data_reid / "reid_challenge" / folder).mkdir(parents=True, exist_ok=True)
        for n in numbers:
            (data_reid / "reid_challenge" / folder / f"{n}.jpeg").touch()


@pytest.fixture
def data_reid(tmp_path) -> Path:
    make_images(tmp_path / "data_reid")
    return tmp_path / "data_reid"


def test_training_frame_columns_and_rows(data_reid):
    frame = training_frame(data_reid, n_folds=10)
    assert list(frame.columns) == ["img_id", "folder", "player", "game", "split", "img_type", "fold"]
    assert len(frame) == 12 * 3 * 20 + 2 * 3 * 20
    for row in frame.itertuples():
        assert (data_reid / row.folder / f"{row.img_id}.jpeg").is_file()
        player, sequence, image_frame = row.img_id.split("_")
        assert row.player == int(player) and row.game == f"{row.split}_{int(sequence)}"
    train = frame[frame.split == "train"]
    assert set(train.folder) == {"reid_training"}
    assert (train.img_type == "q").sum() == 36 and all(train.img_id[train.img_type == "q"].str.endswith("_00"))
    test = frame[frame.split == "test"]
    assert (test.img_type == (test.folder == "reid_test/query").map({True: "q", False: "g"})).all()
    assert frame.player.dtype.kind == "i" and frame.fold.dtype.kind == "i"


def test_folds_group_sequences(data_reid):
    frame = training_frame(data_reid, n_folds=10)
    assert frame.groupby("game").fold.nunique().max() == 1, "no sequence in two folds"
    assert sorted(frame.fold.unique()) == list(range(10))
    assert set(frame.game) == {f"train_{s}" for s in range(12)} | {"test_100", "test_101"}
    assert training_frame(data_reid, n_folds=3).fold.nunique() == 3


def test_too_many_folds_for_the_sequences(data_reid):
    with pytest.raises(CatalogError, match="n_folds=20.*14"):
        training_frame(data_reid, n_folds=20)


def test_challenge_frame(data_reid):
    frame = challenge_frame(data_reid)
    assert list(frame.columns) == ["img_id", "folder", "player", "img_type"]
    assert frame.img_id.tolist() == [3, 20, 100, 0, 1, 2, 7, 10, 11], "queries then gallery, numeric order"
    assert (frame.player == frame.img_id).all()
    assert frame.img_type.tolist() == ["q"] * 3 + ["g"] * 6
    assert set(frame.folder) == {"reid_challenge/query", "reid_challenge/gallery"}


def test_count_table(data_reid):
    table = count_table(training_frame(data_reid, 10), challenge_frame(data_reid)).set_index("subset")
    assert table.loc["train"].tolist() == [36, 720]
    assert table.loc["query test"].tolist() == [6, 6]
    assert table.loc["gallery test"].tolist() == [6, 114]
    assert table.loc["traintest"].tolist() == [42, 840]
    assert table.loc["query challenge"].tolist() == [3, 3]
    assert table.loc["gallery challenge"].tolist() == [6, 6]
    text = format_count_table(table.reset_index())
    assert "gallery challenge |     6 |        6" in text


def test_missing_folder_names_path_and_pattern(data_reid):
    for path in (data_reid / "reid_test" / "gallery").iterdir():
        path.unlink()
    (data_reid / "reid_test" / "gallery").rmdir()
    with pytest.raises(CatalogError) as error:
        training_frame(data_reid)
    assert str(data_reid / "reid_test" / "gallery") in str(error.value)
    assert "folder not found" in str(error.value) and "{player}_{sequence}_{frame}.jpeg" in str(error.value)


def test_empty_folder(data_reid):
    for path in (data_reid / "reid_challenge" / "query").iterdir():
        path.unlink()
    (data_reid / "reid_challenge" / "query" / ".DS_Store").touch()  # hidden files do not count
    with pytest.raises(CatalogError, match=r"reid_challenge/query: empty folder.*\{n\}\.jpeg"):
        challenge_frame(data_reid)


@pytest.mark.parametrize("folder, name", [
    ("reid_training", "12_3_5.jpeg"),  # one-digit frame
    ("reid_training", "12_3_05.jpg"),
    ("reid_test/query", "player12_3_00.jpeg"),
    ("reid_challenge/gallery", "a7.jpeg"),
])
def test_bad_file_name_names_the_path_and_the_pattern(data_reid, folder, name):
    (data_reid / folder / name).touch()
    with pytest.raises(CatalogError) as error:
        training_frame(data_reid) if not folder.startswith("reid_challenge") else challenge_frame(data_reid)
    message = str(error.value)
    assert str(data_reid / folder / name) in message and "does not fit the pattern" in message


def test_a_challenge_number_with_leading_zeros_is_refused(data_reid):
    (data_reid / "reid_challenge" / "gallery" / "000.jpeg").touch()
    with pytest.raises(CatalogError) as error:
        challenge_frame(data_reid)
    assert str(error.value) == (f"{data_reid / 'reid_challenge' / 'gallery' / '000.jpeg'}: a challenge file number with leading "
                                f"zeros (the later stages look for 0.jpeg); rename it 0.jpeg")


@pytest.mark.parametrize("existing, added", [
    ("reid_training/1_0_01.jpeg", "reid_training/01_0_01.jpeg"),
    ("reid_test/query/36_100_00.jpeg", "reid_test/gallery/036_100_00.jpeg"),  # across the query and gallery folders
])
def test_two_files_for_the_same_player_sequence_and_frame_are_refused(data_reid, existing, added):
    assert (data_reid / existing).is_file()
    (data_reid / added).touch()
    with pytest.raises(CatalogError) as error:
        training_frame(data_reid)
    player, sequence, image_frame = Path(existing).stem.split("_")
    files, rest = str(error.value).split(" are ", 1)
    assert sorted(files.split(" and ")) == sorted([str(data_reid / existing), str(data_reid / added)])
    assert rest == f"the same player {player}, sequence {sequence}, frame {image_frame}; keep one of them"


def test_train_and_test_sharing_an_id_is_refused(data_reid):
    (data_reid / "reid_test" / "gallery" / "0_100_05.jpeg").touch()
    with pytest.raises(CatalogError, match=r"player ids \[0\]"):
        training_frame(data_reid)


def test_preprocess_script_on_the_small_twin(tmp_path):
    """The two scripts as a user runs them: synthetic twin, then the DataFrames and the count table."""
    data_dir = tmp_path / "data"
    download, result = run_cases([case("download_data.py", "--source", "synthetic", "--data-dir", data_dir, "--scale", "small",
                                       "--workers", "2"),
                                  case("preprocess_data.py", "--data-dir", data_dir, "--verify-images")], tmp_path)
    assert download.status == 0, download.stderr
    assert result.status == 0, result.stderr
    assert "verified 1,568 images: every one decodes" in result.stdout
    assert "train             |    60 |     1179" in result.stdout
    assert "gallery challenge |   185 |      185" in result.stdout
    train = pd.read_csv(data_dir / "data_reid" / "train_df.csv")
    challenge = pd.read_csv(data_dir / "data_reid" / "challenge_df.csv")
    assert len(train) == 1179 + 10 + 182 and len(challenge) == 12 + 185
    assert train.groupby("game").fold.nunique().max() == 1 and train.fold.nunique() == 10
    for df in (train, challenge):
        assert all((data_dir / "data_reid" / f / f"{i}.jpeg").is_file() for f, i in zip(df.folder, df.img_id))
    assert (data_dir / "data_reid" / "preprocess_config.json").is_file()

    (data_dir / "data_reid" / "reid_training" / "oops.png").touch()
    (failed,) = run_here([case("preprocess_data.py", "--data-dir", data_dir)])
    assert failed.status == 2
    assert "oops.png: file name does not fit the pattern" in failed.stderr and "Traceback" not in failed.stderr
    # unreadable images with --verify-images: tests/test_script_errors.py
