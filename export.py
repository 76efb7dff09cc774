"""Export a trained encoder as ONNX (dynamic batch axis) with a JSON sidecar, and check it with onnxruntime.

    python export.py --checkpoint model/<run>/best.pth --output model.onnx
    python export.py --checkpoint model/<run>/best.pth --output model.onnx --flip --check-images crops/
    python export.py --checkpoint weights_e7.pth --model eva02_large_patch14_448.mim_m38m_ft_in22k_in1k --output eva02.onnx

The ONNX graph maps the letterboxed, normalised crops (input "images", batch x 3 x H x W float32) to
L2-normalised features (output "features", batch x D float32), meant for the squared Euclidean
distance. The sidecar <output>.json gives the input size, mean, std, embedding size, distance and
the checkpoint it came from. After the export, onnxruntime runs the file on a few crops (random
ones, or --check-images) and the largest difference and the lowest cosine similarity to the torch
features are printed; below a cosine of 0.9999 the export fails (and its files are removed).
Needs the optional packages: pip install -r requirements-extras.txt
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from reid.crops import find_images
from reid.errors import InputError, RunFailure, run_script
from reid.files import write_text_atomically
from reid.inference import load_encoder
from reid.onnx_export import MIN_COSINE, agreement, check_crops, export_onnx, onnx_features, require_onnx, sidecar


@dataclass
class Configuration:
    checkpoint: Path
    """A checkpoint of a training run (best.pth or last.pth), or a published weights_e{n}.pth with --model."""
    output: Path | None = None
    """ONNX file to write (ends in .onnx); None = beside the checkpoint, <checkpoint stem>.onnx. The sidecar is <output stem>.json."""
    flip: bool | None = None
    """Put flip test-time augmentation into the graph (sum of the crop's and its mirror's embeddings); None = as in training (flip_test)."""
    model: str | None = None
    """Model name, for checkpoints that carry no configuration (published weights); None = the checkpoint's."""
    img_size: tuple[int, ...] | None = None
    """Input size (one int or height width); None = the checkpoint's."""
    mean: tuple[float, float, float] | None = None
    """Per-channel normalisation mean; None = the checkpoint's."""
    std: tuple[float, float, float] | None = None
    """Per-channel normalisation std; None = the checkpoint's."""
    opset: int | None = None
    """ONNX opset version; None = the exporter's default."""
    optimize: bool = True
    """Optimise the ONNX graph (onnxscript's rewriter: folded constants, fused patterns); --no-optimize exports faster."""
    check_images: list[Path] | None = None
    """Crops (files or folders) to check the export on; None = random crops of varied sizes."""
    check_count: int = 8
    """How many crops the check runs on (in one batch: it also checks the dynamic batch axis)."""
    overwrite: bool = False
    """Replace an existing output file (otherwise an existing file stops the export)."""


def main(config: Configuration) -> dict:
    output = config.output or config.checkpoint.with_suffix(".onnx")
    info_path = output.with_suffix(".json")
    if output.suffix != ".onnx":
        raise InputError(f"--output {output}: the file name must end in .onnx")
    existing = [str(p) for p in (output, info_path) if p.exists()]
    if existing and not config.overwrite:
        raise InputError(f"{existing[0]} exists: pass --overwrite to replace it, or choose another --output")
    if config.check_count < 1:
        raise InputError("--check-count must be at least 1")
    require_onnx()

    # model, in full precision on the CPU (what the ONNX graph computes)
    encoder = load_encoder(config.checkpoint, "cpu", model=config.model, img_size=config.img_size, mean=config.mean,
                           std=config.std, precision="fp32", flip=config.flip)
    height, width = encoder.img_size
    print(f"{config.checkpoint}: {encoder.config.get('model')}, input 3 x {height} x {width}, "
          f"embedding {encoder.embed_dim}, flip {encoder.flip}")

    # export, traced at batch 2 (the batch axis stays dynamic)
    export_onnx(encoder.feature_model(), torch.zeros(2, 3, height, width), output, opset=config.opset,
                optimize=config.optimize)

    # check: onnxruntime against torch on the same crops
    crops = (find_images(config.check_images)[:config.check_count] if config.check_images
             else check_crops(config.check_count))
    inputs = torch.stack([encoder.preprocess(crop) for crop in crops]).numpy()  # (B, 3, H, W)
    largest, lowest = agreement(encoder.embed(crops), onnx_features(output, inputs))
    print(f"check on {len(crops)} crops: largest difference {largest:.3g}, lowest cosine similarity {lowest:.7f}")
    if not lowest >= MIN_COSINE:
        output.unlink(missing_ok=True)
        raise RunFailure(f"the ONNX model disagrees with torch (lowest cosine {lowest:.6f} < {MIN_COSINE}): "
                         f"{output} removed; the model probably uses an operation the exporter translates wrongly")

    # sidecar
    info = sidecar(encoder, output, config.opset, {"crops": len(crops), "largest_difference": largest, "lowest_cosine": lowest})
    write_text_atomically(info_path, json.dumps(info, indent=2) + "\n")
    print(f"wrote {output} and {info_path}")
    return info


if __name__ == "__main__":
    run_script(main, Configuration)
