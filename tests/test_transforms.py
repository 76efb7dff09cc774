"""Letterbox resizing and the training / evaluation pipelines."""

from __future__ import annotations

import pytest
import torch

from tiny_models import one_thread  # noqa: F401  (autouse)
from reid.transforms import Letterbox, eval_transform, train_transform


@pytest.mark.parametrize("shape, size", [((3, 80, 40), (64, 64)), ((3, 30, 90), (64, 64)), ((3, 50, 50), (32, 48)),
                                         ((3, 200, 60), (256, 128)), ((3, 7, 3), (20, 20))])
def test_letterbox_output_has_the_model_size(shape, size):
    image = torch.randint(1, 256, shape, dtype=torch.uint8)
    out = Letterbox(size)(image)
    assert out.shape == (3, *size) and out.dtype == torch.uint8


def test_letterbox_keeps_the_aspect_ratio_and_pads_centred_with_black():
    tall = torch.full((3, 80, 40), 200, dtype=torch.uint8)
    out = Letterbox((64, 64))(tall)  # scaled to 64 x 32, 16 black columns each side
    filled = (out[0] > 0).nonzero()
    assert filled[:, 1].min().item() == 16 and filled[:, 1].max().item() == 47
    assert filled[:, 0].min().item() == 0 and filled[:, 0].max().item() == 63
    wide = torch.full((3, 30, 90), 200, dtype=torch.uint8)
    rows = (Letterbox((60, 60))(wide)[0] > 0).any(dim=1).nonzero()[:, 0]
    assert (rows.min().item(), rows.max().item()) == (20, 39)  # 20 x 60 content, centred


def test_pipelines_give_normalised_float_images_of_the_model_size():
    image = torch.randint(0, 256, (3, 70, 30), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    evaluated = eval_transform((48, 32), mean, std)(image)
    assert evaluated.shape == (3, 48, 32) and evaluated.dtype == torch.float32
    # the padding is black before normalisation: value -mean/std
    assert evaluated[0, 0, 0].item() == pytest.approx(-0.5 / 0.2, rel=1e-5)
    assert torch.equal(eval_transform((48, 32), mean, std)(image), evaluated)  # deterministic
    trained = train_transform((48, 32), mean, std)(image)
    assert trained.shape == (3, 48, 32) and trained.dtype == torch.float32


def test_training_augmentations_are_random_but_reproducible_from_the_seed():
    image = torch.randint(0, 256, (3, 70, 30), dtype=torch.uint8)
    transform = train_transform((48, 32), (0.5,) * 3, (0.5,) * 3, sharpen_prob=1.0, erase_prob=1.0)
    torch.manual_seed(3)
    first = transform(image)
    torch.manual_seed(3)
    assert torch.equal(transform(image), first)
    assert not torch.equal(transform(image), first)
    assert not torch.equal(first, eval_transform((48, 32), (0.5,) * 3, (0.5,) * 3)(image))
