"""Image reading, splits, evaluation order, the pair dataset and the unique-player batch sampler."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reid.data import PairDataset, UniquePlayerBatchSampler, player_labels, read_image
from reid.images import ImageReadError
from reid.layout import query_gallery, sort_for_evaluation, split_train_test
from reid.transforms import eval_transform


def uneven_labels(seed: int = 0) -> np.ndarray:
    """40 players with 1 to 30 images each, shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(40), rng.integers(1, 31, size=40))
    return rng.permutation(labels)


@pytest.mark.parametrize("packing", ["requeue", "carry"])
def test_no_player_twice_in_a_batch_and_no_image_twice_in_an_epoch(packing):
    labels = uneven_labels()
    sampler = UniquePlayerBatchSampler(labels, batch_size=16, seed=7, packing=packing)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    seen = []
    for batch in batches:
        indices = [index for index, _ in batch]
        assert len(indices) == 16
        assert len(set(labels[indices])) == 16
        seen += indices
    assert len(seen) == len(set(seen))
    assert len(seen) >= 0.8 * len(labels)  # the greedy packing leaves little out


def test_order_changes_with_the_epoch_and_repeats_with_the_seed():
    labels = uneven_labels()
    sampler = UniquePlayerBatchSampler(labels, batch_size=8, seed=1)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) != epoch1
    again = UniquePlayerBatchSampler(labels, batch_size=8, seed=1)
    again.set_epoch(1)
    assert list(again) == epoch1
    other_seed = UniquePlayerBatchSampler(labels, batch_size=8, seed=2)
    other_seed.set_epoch(1)
    assert list(other_seed) != epoch1


def test_ranks_get_disjoint_equal_shares_of_distinct_players():
    labels = uneven_labels(1)
    ranks = [UniquePlayerBatchSampler(labels, batch_size=6, seed=3, rank=r, world_size=2) for r in range(2)]
    single = UniquePlayerBatchSampler(labels, batch_size=12, seed=3)
    for sampler in (*ranks, single):
        sampler.set_epoch(4)
    shares = [list(sampler) for sampler in ranks]
    assert len(shares[0]) == len(shares[1]) == len(ranks[0]) == len(ranks[1]) > 0
    indices = [[i for batch in share for i, _ in batch] for share in shares]
    assert not set(indices[0]) & set(indices[1])
    for batch0, batch1, whole in zip(*shares, single):
        # the two ranks' batches together hold distinct players (the loss gathers them) ...
        together = [i for i, _ in batch0 + batch1]
        assert len(set(labels[together])) == 12
        # ... and are exactly the single-process batch of twice the size
        assert batch0 + batch1 == whole


def published_shuffle(order: list[int], players: np.ndarray, batch_size: int) -> list[list[int]]:
    """The published TrainDataset.shuffle on a given order, in plain words: walk a list; an image whose
    player is in the current batch is moved to the end of the list; give up after 10 such moves in a
    row; the DataLoader then drops the last, incomplete batch (drop_last=True)."""
    waiting, taken, in_batch, moved = list(order), [], set(), 0
    while waiting and moved < 10:
        image = waiting.pop(0)
        if players[image] in in_batch:
            waiting.append(image)
            moved += 1
            continue
        taken.append(image)
        in_batch.add(players[image])
        moved = 0
        if len(in_batch) == batch_size:
            in_batch = set()
    full = len(taken) // batch_size * batch_size
    return [taken[start:start + batch_size] for start in range(0, full, batch_size)]


@pytest.mark.parametrize("seed, batch_size", [(0, 8), (1, 16), (2, 30)])
def test_requeue_packing_is_the_published_shuffle(seed, batch_size):
    labels = uneven_labels(seed)
    sampler = UniquePlayerBatchSampler(labels, batch_size=batch_size, seed=seed)  # requeue: the default
    sampler.set_epoch(3)
    order = np.random.default_rng([seed, 3]).permutation(len(labels)).tolist()  # the sampler's draw for (seed, epoch)
    assert [[i for i, _ in batch] for batch in sampler] == published_shuffle(order, labels, batch_size)


def test_carry_packing_leaves_fewer_images_out_at_large_batches():
    labels = np.repeat(np.arange(436), np.random.default_rng(0).integers(12, 21, size=436))  # 436 players, 12-20 images
    left_out = {}
    for packing in ("requeue", "carry"):
        sampler = UniquePlayerBatchSampler(labels, batch_size=128, seed=0, packing=packing)
        left_out[packing] = []
        for epoch in range(1, 11):
            sampler.set_epoch(epoch)
            left_out[packing].append(len(labels) - 128 * len(sampler))
    assert np.mean(left_out["carry"]) < 0.6 * np.mean(left_out["requeue"])


def test_too_few_players_for_a_batch_is_an_error():
    with pytest.raises(ValueError, match="distinct players"):
        UniquePlayerBatchSampler(np.repeat(np.arange(5), 10), batch_size=4, world_size=2)


@pytest.fixture
def images(tmp_path):
    """6 images of 3 players with distinct colours; returns (paths, labels)."""
    paths, labels = [], []
    for index in range(6):
        image = torch.zeros(3, 40, 20, dtype=torch.uint8)
        image[index % 3] = 40 * index + 20
        image[:, :, :5] = 255  # a white stripe on the left, to see flips
        path = tmp_path / f"{index}.jpeg"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=100)
        paths.append(path)
        labels.append(index % 3)
    return paths, np.array(labels)


def test_pair_dataset_pairs_an_image_with_another_of_its_player(images):
    paths, labels = images
    dataset = PairDataset(paths, labels, eval_transform((40, 20), (0, 0, 0), (1, 1, 1)), prob_flip=0.0)
    for seed in range(5):
        query, gallery, label = dataset[(0, seed)]
        assert label.item() == 0 and label.dtype == torch.int64
        assert query.shape == gallery.shape == (3, 40, 20)
        assert torch.allclose(query, dataset[(0, seed)][0])  # same key, same item
        assert not torch.allclose(query, gallery, atol=0.05)  # the partner is image 3, not image 0
        assert torch.allclose(gallery, eval_transform((40, 20), (0, 0, 0), (1, 1, 1))(read_image(paths[3])))


def test_pair_dataset_flips_both_images_together(images):
    paths, labels = images
    dataset = PairDataset(paths, labels, eval_transform((40, 20), (0, 0, 0), (1, 1, 1)), prob_flip=1.0)
    query, gallery, _ = dataset[(1, 0)]
    for image in (query, gallery):
        assert image[:, :, -3:].mean() > 0.9 and image[:, :, :3].mean() < 0.9  # stripe now on the right


def test_unreadable_images_are_reported_with_their_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jpeg"):
        read_image(tmp_path / "nothere.jpeg")
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpeg"):
        read_image(broken)


def test_unreadable_images_lists_every_bad_file_in_order(tmp_path):
    from PIL import Image

    from reid.errors import RunFailure
    from reid.images import unreadable_images

    good = tmp_path / "good.jpeg"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(good)
    truncated, empty, text = tmp_path / "truncated.jpeg", tmp_path / "empty.jpeg", tmp_path / "text.jpeg"
    truncated.write_bytes(good.read_bytes()[:200])
    empty.write_bytes(b"")
    text.write_text("not an image\n")
    paths = [good, empty, tmp_path / "absent.jpeg", good, truncated, text]
    problems = unreadable_images(paths, workers=2, progress=False)
    assert [path for path, _ in problems] == [empty, tmp_path / "absent.jpeg", truncated, text]
    assert problems[0][1] == "empty file (0 bytes)" and problems[1][1] == "file not found"
    assert all(str(tmp_path) not in reason for _, reason in problems)  # the path is said once, before the reason
    with pytest.raises(RunFailure, match=rf"cannot decode image {empty}: empty file \(0 bytes\); replace or remove"):
        read_image(empty)


def frame() -> pd.DataFrame:
    rows = []
    for player, split, fold in ((5, "train", 0), (2, "train", 1), (9, "test", 2), (7, "test", 2)):
        for frame_number in (3, 0, 12):
            rows.append({"img_id": f"{player}_1_{frame_number:02d}", "folder": "x", "player": player, "game": f"{split}_1",
                         "split": split, "img_type": "q" if frame_number == 0 else "g", "fold": fold})
    return pd.DataFrame(rows)


def test_splits_follow_the_published_scripts():
    df = frame()
    train, test = split_train_test(df)
    assert set(train["player"]) == {5, 2} and set(test["player"]) == {9, 7}
    train, held_out = split_train_test(df, fold=1)
    assert set(held_out["player"]) == {2} and set(train["player"]) == {5, 9, 7}
    train, test = split_train_test(df, train_on_all=True)
    assert len(train) == len(df) and set(test["player"]) == {9, 7}
    with pytest.raises(ValueError, match="fold 4 does not exist"):
        split_train_test(df, fold=4)


def test_evaluation_order_is_player_then_frame():
    query, gallery = query_gallery(frame()[lambda d: d["split"] == "test"])
    assert query["img_id"].tolist() == ["7_1_00", "9_1_00"]
    assert gallery["img_id"].tolist() == ["7_1_03", "7_1_12", "9_1_03", "9_1_12"]
    challenge = pd.DataFrame({"img_id": ["10", "9", "100"], "player": [10, 9, 100]})
    assert sort_for_evaluation(challenge)["img_id"].tolist() == ["9", "10", "100"]


def test_player_labels_are_contiguous_class_indices():
    labels, classes = player_labels([17, 3, 17, 40])
    assert labels.tolist() == [1, 0, 1, 2] and classes.tolist() == [3, 17, 40]
