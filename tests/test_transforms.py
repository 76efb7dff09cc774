"""Letterbox resizing, the published Sharpen, and the training / evaluation pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reid.transforms import Letterbox, Sharpen, eval_transform, sharpen, sharpening_kernel, train_transform

# Outputs of albumentations 1.3.1 Sharpen (the published augmentation) on hand-made images.
ALBUMENTATIONS_CASES = Path(__file__).parent / "reference" / "sharpen_albumentations.json"


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


def plain_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2's INTER_LINEAR definition (half-pixel centres, edge clamped, no antialiasing), float64, per pixel."""
    channels, h, w = image.shape
    out = np.zeros((channels, height, width))
    for i in range(height):
        y = min(max((i + 0.5) * h / height - 0.5, 0.0), h - 1.0)
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(width):
            x = min(max((j + 0.5) * w / width - 0.5, 0.0), w - 1.0)
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w - 1), x - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * image[:, y0, x0] + fx * image[:, y0, x1])
                            + fy * ((1 - fx) * image[:, y1, x0] + fx * image[:, y1, x1]))
    return out


@pytest.mark.parametrize("shape, size", [((3, 20, 8), (50, 50)), ((3, 90, 36), (30, 30))])
def test_letterbox_resizes_like_the_published_bilinear_within_a_grey_level(shape, size):
    # The published RectResize used cv2.INTER_LINEAR_EXACT: bilinear without antialiasing, also when shrinking.
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = Letterbox(size)(image).numpy().astype(np.float64)
    h, w = shape[1:]
    scale = min(size[0] / h, size[1] / w)
    new_h, new_w = round(h * scale), round(w * scale)
    top, left = (size[0] - new_h) // 2, (size[1] - new_w) // 2
    expected = plain_bilinear(image.numpy().astype(np.float64), new_h, new_w)
    assert np.abs(out[:, top:top + new_h, left:left + new_w] - expected).max() <= 1.0  # rounding only
    assert out.sum() == out[:, top:top + new_h, left:left + new_w].sum()  # black outside


@pytest.mark.parametrize("case", json.loads(ALBUMENTATIONS_CASES.read_text())["cases"],
                         ids=lambda case: f"{case['image']}-a{case['alpha']}-l{case['lightness']}")
def test_sharpen_equals_albumentations_on_hand_made_images(case):
    image = torch.tensor(case["input_hwc"], dtype=torch.uint8).permute(2, 0, 1)
    fixed = Sharpen(alpha=(case["alpha"],) * 2, lightness=(case["lightness"],) * 2, p=1.0)
    out = fixed(image).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out, np.array(case["output_hwc"], dtype=np.uint8))


def plain_sharpen(image: np.ndarray, alpha: float, lightness: float) -> np.ndarray:
    """The published formula written out: each output pixel = (1 - alpha) * centre + alpha * ((8 + lightness)
    * centre - sum of the 8 neighbours), neighbours mirrored at the border without repeating the edge."""
    def mirror(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    channels, h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            neighbours = sum(image[:, mirror(y + dy, h), mirror(x + dx, w)]
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
            out[:, y, x] = (1 - alpha) * image[:, y, x] + alpha * ((8 + lightness) * image[:, y, x] - neighbours)
    return out


def test_sharpen_follows_the_formula_on_float_images_and_clips_to_the_pixel_range():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, 9, 7, generator=generator)
    out = sharpen(image, sharpening_kernel(0.4, 0.7))
    assert out.dtype == torch.float32 and out.shape == image.shape
    expected = np.clip(plain_sharpen(image.numpy().astype(np.float64), 0.4, 0.7), 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert 0 < (expected == 0).sum() + (expected == 1).sum()  # the case does clip
    batch = torch.stack([image, image.flip(-1)])  # (N, C, H, W): each image on its own
    torch.testing.assert_close(sharpen(batch, sharpening_kernel(0.4, 0.7))[1], out.flip(-1), rtol=0, atol=1e-6)


def test_sharpen_draws_alpha_and_lightness_in_their_ranges_with_probability_p():
    image = torch.full((3, 5, 5), 100, dtype=torch.uint8)
    image[:, 2, 2] = 120  # a brighter centre: out = (1 - a) * 120 + a * ((8 + l) * 120 - 800) = 120 + a * (40 + 120 l)
    transform = Sharpen(p=0.5)  # the published defaults: alpha (0.2, 0.5), lightness (0.5, 1.0)
    torch.manual_seed(0)
    centres = [int(transform(image)[0, 2, 2]) for _ in range(400)]
    applied = [c for c in centres if c != 120]
    assert 0.4 < len(applied) / len(centres) < 0.6
    low, high = 120 + 0.2 * (40 + 120 * 0.5), 120 + 0.5 * (40 + 120 * 1.0)  # 140 .. 200
    assert all(low - 1 <= c <= high + 1 for c in applied) and max(applied) - min(applied) > 40
    torch.manual_seed(0)
    assert [int(transform(image)[0, 2, 2]) for _ in range(400)] == centres  # reproducible from the seed
    assert torch.equal(Sharpen(p=0.0)(image), image)


def test_the_training_pipeline_sharpens_the_letterboxed_uint8_image():
    image = torch.randint(0, 256, (3, 40, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    transform = train_transform((40, 20), (0.0,) * 3, (1.0,) * 3, sharpen_prob=1.0, erase_prob=0.0)
    sharpeners = [step for step in transform.transforms if isinstance(step, Sharpen)]
    assert len(sharpeners) == 1 and (sharpeners[0].alpha, sharpeners[0].lightness) == ((0.2, 0.5), (0.5, 1.0))
    torch.manual_seed(5)
    out = transform(image)
    torch.manual_seed(5)
    expected = Sharpen(p=1.0)(Letterbox((40, 20))(image)).float() / 255
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
