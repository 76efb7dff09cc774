"""The Python API: reid.load_encoder(...).embed(crops) against predict.py, the preprocessing by hand, bad input.

Checkpoints are tiny random-init timm models saved as training saves them (weights + configuration).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
import reid
from reid.crops import find_images
from reid.devices import resolve_device
from reid.engine import save_checkpoint
from reid.errors import InputError
from reid.features import FeatureSet
from reid.images import ImageReadError
from reid.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "test_resnet", "img_size": [48, 24], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
        "fold": -1, "k1": 20, "k2": 6, "lambda_value": 0.7, "flip_test": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    encoder = build_model(TINY)
    return save_checkpoint({"model": encoder.state_dict(), "config": TINY, "epoch": 1},
                           tmp_path_factory.mktemp("model") / "run" / "best.pth")


def test_embed_gives_the_features_of_predict(twin_data, checkpoint, tmp_path):
    predict.main(predict.Configuration(checkpoint=[checkpoint], data_dir=twin_data, output_dir=tmp_path, splits=("test",),
                                       distances=("raw",), device="cpu", num_workers=0, verbose=False))
    saved = FeatureSet.load(tmp_path / "run" / "features_test.npz")
    paths = [twin_data / "data_reid" / folder / f"{img_id}.jpeg" for folder, img_id in zip(saved.folder, saved.img_id)]

    encoder = reid.load_encoder(checkpoint, device="cpu")
    assert encoder.config["model"] == "test_resnet" and encoder.img_size == (48, 24) and encoder.flip is False
    features = encoder.embed(paths)  # the same batches of 64 as predict.py: the same numbers
    assert features.dtype == np.float32 and features.shape == (len(paths), encoder.embed_dim)
    np.testing.assert_array_equal(features, saved.features)

    # PIL images and RGB arrays are the same crops; one crop alone is a batch of one
    few = paths[:5]
    pil = [Image.open(p) for p in few]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in few]
    np.testing.assert_allclose(encoder.embed(pil), saved.features[:5], atol=1e-6)
    np.testing.assert_allclose(encoder.embed(arrays, batch_size=2), saved.features[:5], atol=1e-6)
    np.testing.assert_allclose(encoder(arrays[3]), saved.features[3:4], atol=1e-6)


def test_preprocess_letterboxes_and_normalises_by_hand():
    encoder = reid.inference.ReidEncoder(build_model(TINY), TINY, torch.device("cpu"))
    mean, std = np.array(TINY["mean"]), np.array(TINY["std"])
    # a 12 x 12 crop of one colour fills the middle 24 x 24 of the 48 x 24 input, black above and below
    colour = np.array([200, 100, 50], dtype=np.uint8)
    tensor = encoder.preprocess(np.tile(colour, (12, 12, 1))).numpy()  # (3, 48, 24)
    assert tensor.shape == (3, 48, 24) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[:, 12:36, :], np.broadcast_to(((colour / 255 - mean) / std)[:, None, None], (3, 24, 24)), atol=1e-5)
    padding = np.concatenate([tensor[:, :12], tensor[:, 36:]], axis=1)
    np.testing.assert_allclose(padding, np.broadcast_to((-mean / std)[:, None, None], padding.shape), atol=1e-6)


def test_flip_test_time_augmentation_sums_the_mirror_embedding(twin_data, checkpoint):
    encoder = reid.load_encoder(checkpoint, device="cpu", flip=True)
    paths = find_images(twin_data / "data_reid" / "reid_test" / "query")[:4]
    batch = torch.stack([encoder.preprocess(p) for p in paths])
    with torch.no_grad():
        summed = encoder.module(batch) + encoder.module(batch.flip(3))
    expected = (summed / summed.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(encoder.embed(paths), expected, atol=1e-6)
    assert not np.allclose(encoder.embed(paths, flip=False), expected, atol=1e-3)


def test_overrides_published_checkpoints_precision_and_lazy_import(checkpoint, twin_data, tmp_path):
    encoder = reid.load_encoder(checkpoint, device="cpu", img_size=(64, 32), mean=(0.5, 0.5, 0.5))
    assert encoder.img_size == (64, 32) and encoder.mean == (0.5, 0.5, 0.5) and encoder.std == tuple(TINY["std"])
    assert encoder.preprocess(np.zeros((10, 5, 3), np.uint8)).shape == (3, 64, 32)
    # the published layout (weights_e<n>.pth: timm keys under model., and the loss's logit scale): the same features
    weights = torch.load(checkpoint, weights_only=True)["model"]
    published = tmp_path / "weights_e4.pth"
    torch.save({f"model.{key[len('backbone.'):]}": value for key, value in weights.items()}
               | {"model.logit_scale": torch.tensor(2.66)}, published)
    crops = find_images(twin_data / "data_reid" / "reid_test" / "query")
    ours = reid.load_encoder(checkpoint, device="cpu")
    theirs = reid.load_encoder(published, device="cpu", model="test_resnet", img_size=(48, 24), mean=TINY["mean"], std=TINY["std"])
    np.testing.assert_array_equal(theirs.embed(crops), ours.embed(crops))
    with pytest.raises(InputError, match="pass --model"):
        reid.load_encoder(published, device="cpu")
    # the evaluation precision: on the CPU always fp32 (the same numbers); a name that is none raises
    np.testing.assert_array_equal(reid.load_encoder(checkpoint, device="cpu", precision="bf16").embed(crops), ours.embed(crops))
    with pytest.raises(InputError, match="precision 'int8'"):
        reid.load_encoder(checkpoint, device="cpu", precision="int8")
    # `import reid` stays light: torch comes with the first use of the API (as above)
    code = "import sys, reid; assert 'torch' not in sys.modules and {'load_encoder', 'find_images'} <= set(dir(reid))"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_bad_input_is_named(checkpoint, tmp_path):
    encoder = reid.load_encoder(checkpoint, device="cpu")
    broken = tmp_path / "crops" / "broken.jpeg"
    broken.parent.mkdir()
    broken.write_bytes(b"not an image")
    Image.new("RGB", (10, 20)).save(tmp_path / "crops" / "good.png")
    for workers in (0, 1):  # also from a loader process: the error itself, not a traceback
        with pytest.raises(ImageReadError, match=r"^cannot decode image \S*broken\.jpeg: [^\n]*; replace or remove the file$"):
            encoder.embed(find_images(tmp_path / "crops"), num_workers=workers)
    with pytest.raises(InputError, match=r"image 1 of the list: an image array must be H x W x 3 uint8"):
        encoder.embed([np.zeros((8, 4, 3), np.uint8), np.zeros((8, 4), np.uint8)])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no crops here")
    with pytest.raises(InputError, match=r"empty: no images in this folder"):
        find_images(tmp_path / "empty")
    with pytest.raises(InputError, match="no such file or folder"):
        find_images(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        reid.load_encoder(tmp_path / "missing.pth", device="cpu")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"other\.pth: not a training checkpoint"):
        reid.load_encoder(tmp_path / "other.pth", device="cpu")


def test_find_images_walks_any_layout_in_natural_order(tmp_path):
    for name in ("b/10.jpg", "b/2.jpg", "a/x.PNG", ".hidden/y.jpg", "a/.z.jpg", "a/readme.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_images([tmp_path, tmp_path / "b" / "2.jpg"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/x.PNG", "b/2.jpg", "b/10.jpg"]


def test_one_device_policy_for_every_stage():
    expected = torch.device("cuda:1" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto", local_rank=1) == expected  # under torchrun: this process's GPU
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(InputError, match="expected auto, cpu, cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no GPU is visible here"):
            resolve_device("cuda")
