"""The feature model as ONNX: export with a dynamic batch axis, run with onnxruntime, compare, describe.

The graph is ``reid.inference.FeatureModel``: input ``images`` (batch, 3, H, W) float32, the
letterboxed normalised crops (``ReidEncoder.preprocess``); output ``features`` (batch, D) float32,
L2-normalised (flip test-time augmentation inside the graph when asked). Preprocessing stays outside
the graph; the JSON sidecar written beside the model says what it is (``sidecar``).

Export uses torch's ``torch.export``-based exporter: ``torch.export.export`` for the graph, then
``torch.onnx.export(..., dynamo=True)`` (which needs onnxscript) for its translation. onnx,
onnxscript and onnxruntime are optional dependencies (``requirements-extras.txt``), imported only here.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reid.errors import InputError, RunFailure

INPUT_NAME = "images"
OUTPUT_NAME = "features"
MIN_COSINE = 0.9999  # the check fails below this cosine similarity between ONNX and torch features
EXTRAS_HINT = "pip install -r requirements-extras.txt (onnx, onnxscript, onnxruntime)"


def require_onnx() -> None:
    """Raise ``InputError`` with the install command when the optional ONNX packages are missing."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise InputError(f"ONNX export needs {', '.join(missing)}: {EXTRAS_HINT}")


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, opset: int | None = None,
                optimize: bool = True) -> Path:
    """Write ``model`` (eval mode; (B, 3, H, W) -> (B, D)) to ``path`` as ONNX, batch axis dynamic.

    example: a (B >= 2, 3, H, W) input to trace with (batch 1 would be fixed into the graph).
    optimize: run onnxscript's graph optimiser (constant folding, fused patterns; slower export).
    A model that does not export raises ``RunFailure`` naming the innermost module that was running
    when the exporter failed (``backbone.blocks.3.attn (Attention)``) and the exporter's reason.
    """
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    # step 1, the graph (torch.export runs the modules' Python code: a failure happens inside one)
    with _running_modules(model) as running, _quiet():
        try:
            exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
        except Exception as error:  # the exporters raise many kinds; all mean "this model does not export"
            where = running[-1] if running and running[-1][0] else None
            raise RunFailure(f"ONNX export failed {_in(where, model)}: {_reason(error)}") from None
    # step 2, its translation to ONNX operators (a failure names an operation: find the module that called it)
    with _quiet():
        try:
            program = torch.onnx.export(exported, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        opset_version=opset, dynamo=True, optimize=optimize, verbose=False)
        except Exception as error:
            raise RunFailure(f"ONNX export failed {_in(_module_of_failed_node(error), model)}: "
                             f"{_reason(error)}") from None
    program.save(str(path))
    return path


def onnx_features(path: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Run the ONNX model at ``path`` with onnxruntime on the CPU: (B, 3, H, W) float32 -> (B, D) float32."""
    require_onnx()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0])


def agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(largest absolute difference, lowest row cosine similarity) between two (B, D) feature sets."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if reference.shape != other.shape:
        raise RunFailure(f"the ONNX model gives features of shape {other.shape}, torch {reference.shape}")
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    cosine = (reference * other).sum(1) / np.maximum(norms, 1e-12)
    return float(np.abs(reference - other).max()), float(cosine.min())


def check_crops(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random (H, W, 3) uint8 crops of varied sizes and aspect ratios (tall, wide, square),
    for checking an export when no images are given: the comparison needs inputs, not players."""
    rng = np.random.default_rng(seed)
    sizes = [(int(rng.integers(24, 200)), int(rng.integers(16, 120))) for _ in range(count)]
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for height, width in sizes]


def sidecar(encoder: Any, onnx_path: Path, opset: int | None, check: dict[str, float]) -> dict[str, Any]:
    """What a program using the ONNX file must know, as a plain JSON-able dict (``encoder``: a ReidEncoder)."""
    height, width = encoder.img_size
    return {
        "onnx": onnx_path.name,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32", "layout": "NCHW, RGB"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", encoder.embed_dim], "dtype": "float32", "l2_normalized": True},
        "input_size": [height, width],
        "mean": list(encoder.mean),
        "std": list(encoder.std),
        "preprocessing": (f"RGB crop -> letterbox to {height} x {width} (resize to fit, keeping the aspect ratio, bilinear "
                          "with antialiasing; centred; black padding) -> pixel values / 255 -> (x - mean) / std per channel"),
        "embedding_size": encoder.embed_dim,
        "flip_test_time_augmentation": encoder.flip,
        "distance": encoder.distance,
        "distance_note": "squared Euclidean between the L2-normalised features (= 2 - 2 cosine); smaller = more similar",
        "model": encoder.config.get("model"),
        "checkpoint": str(encoder.checkpoint.resolve()) if encoder.checkpoint else None,
        "opset": opset,
        "check": check,
    }


@contextlib.contextmanager
def _running_modules(model: nn.Module) -> Iterator[list[tuple[str, str]]]:
    """While inside: a list of the (qualified name, class name) of the modules whose forward is running,
    outermost first. An exception leaves the failing module at the end (its forward never returned)."""
    running: list[tuple[str, str]] = []
    names = {module: name for name, module in model.named_modules()}

    def enter(module: nn.Module, args: Any) -> None:
        running.append((names.get(module, "?"), type(module).__name__))

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if running:
            running.pop()

    handles = [m.register_forward_pre_hook(enter) for m in names] + [m.register_forward_hook(leave) for m in names]
    try:
        yield running
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """The exporter prints its progress (and on failure whole graphs); keep them for the error message only."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def _in(where: tuple[str, str] | None, model: nn.Module) -> str:
    return f"in module {where[0]} ({where[1]})" if where else f"in {type(model).__name__}"


def _module_of_failed_node(error: BaseException) -> tuple[str, str] | None:
    """(module name, class name) of the graph node the ONNX translation failed on, if any.

    The translation works on a decomposed graph (``aten._linalg_eigh`` for ``linalg.eigvalsh``) whose
    nodes keep the ``nn_module_stack`` of the call that made them; the failing node is a local of
    the translator's frames in the error's traceback."""
    for link in reversed(_chain(error)):
        frame = link.__traceback__
        while frame is not None:
            for value in list(frame.tb_frame.f_locals.values()):
                stack = value.meta.get("nn_module_stack") if isinstance(value, torch.fx.Node) else None
                if stack:
                    module, cls = list(stack.values())[-1]
                    return module, str(cls).rsplit(".", 1)[-1]
            frame = frame.tb_next
    return None


def _chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    return chain


def _reason(error: BaseException) -> str:
    # The exporters wrap the real error (torch.export's, the ONNX translation's) with pages of advice.
    root = _chain(error)[-1]
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    return f"{type(root).__name__}: {lines[0] if lines else 'no message'}"
