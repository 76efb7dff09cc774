"""export.py: ONNX files of a tiny CNN and a tiny ViT, checked with onnxruntime on real crops; failures named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import export
import reid
from reid.crops import find_images
from reid.engine import save_checkpoint
from reid.errors import InputError, RunFailure
from reid.models import build_model
from reid.onnx_export import export_onnx, onnx_features

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def tiny_checkpoint(folder: Path, model: str, img_size: list[int]) -> Path:
    config = {"model": model, "img_size": img_size, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "flip_test": False}
    torch.manual_seed(0)
    return save_checkpoint({"model": build_model(config).state_dict(), "config": config}, folder / "best.pth")


@pytest.mark.parametrize(("model", "img_size", "flip", "optimize"), [
    ("test_resnet", [48, 24], False, True),   # a CNN, the graph optimised (the default)
    ("test_vit", [32, 16], True, False),      # a ViT, flip test-time augmentation inside the graph
])
def test_export_matches_torch_at_any_batch_size(twin_data, tmp_path, model, img_size, flip, optimize):
    checkpoint = tiny_checkpoint(tmp_path, model, img_size)
    crops = find_images(twin_data / "data_reid" / "reid_test" / "query")
    output = tmp_path / "onnx" / "model.onnx"
    info = export.main(export.Configuration(checkpoint=checkpoint, output=output, flip=flip, optimize=optimize,
                                            check_images=[crops[0].parent], check_count=4))
    saved = json.loads(output.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["input_size"] == img_size and saved["mean"] == [0.5, 0.4, 0.3] and saved["std"] == [0.2, 0.2, 0.2]
    assert saved["input"]["shape"] == ["batch", 3, *img_size] and saved["distance"] == "squared_euclidean"
    assert saved["flip_test_time_augmentation"] is flip and saved["checkpoint"] == str(checkpoint.resolve())
    assert saved["check"]["lowest_cosine"] >= 0.9999 and saved["check"]["crops"] == 4

    # other batch sizes than the export's and the check's: the batch axis is dynamic
    encoder = reid.load_encoder(checkpoint, device="cpu", flip=flip)
    assert saved["embedding_size"] == encoder.embed_dim
    for batch in (crops[:1], crops[1:8]):
        inputs = torch.stack([encoder.preprocess(p) for p in batch]).numpy()
        np.testing.assert_allclose(onnx_features(output, inputs), encoder.embed(batch), atol=2e-5)

    with pytest.raises(InputError, match="exists: pass --overwrite"):
        export.main(export.Configuration(checkpoint=checkpoint, output=output))


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x  # Python control flow on a tensor value: not traceable


class Eigenvalues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(x @ x.transpose(-1, -2))  # traces, but has no ONNX operator


@pytest.mark.parametrize(("module", "name"), [(DataDependent(), "DataDependent"), (Eigenvalues(), "Eigenvalues")])
def test_a_model_that_does_not_export_names_the_module(tmp_path, module, name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Flatten(2), module)).eval()
    with pytest.raises(RunFailure, match=rf"^ONNX export failed in module 1\.1 \({name}\): \w+"):
        export_onnx(model, torch.zeros(2, 3, 8, 8), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
