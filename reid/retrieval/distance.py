"""Pairwise distances between feature sets, on the CPU or the GPU.

Convention used across the project (and by the published implementation): features are
L2-normalised float32 and the distance is the **squared Euclidean** distance computed as
``|x|^2 + |y|^2 - 2 x.y`` in one ``addmm`` (so for unit vectors it equals ``2 - 2 cos``; it is not
clipped and self-distances can be about ±1e-7).
"""

from __future__ import annotations

import torch

from reid.retrieval.arrays import ArrayLike, as_tensor, like_input


def squared_euclidean(x: ArrayLike, y: ArrayLike, block_size: int | None = None, *, y_squared_norms: torch.Tensor | None = None) -> ArrayLike:
    """Squared Euclidean distance between the rows of ``x`` and ``y``.

    x: (a, d), y: (b, d) float32 features (numpy or torch, CPU or CUDA).
    Returns (a, b) float32, ``D[i, j] = |x_i|^2 + |y_j|^2 - 2 x_i.y_j`` (bit-identical to the
    published evaluation code's ``addmm``), as numpy when ``x`` is numpy, else a tensor on x's device.
    block_size: rows of ``x`` per matmul (bounds the temporary memory of huge products); None = one block.
    y_squared_norms: (b,) ``y.pow(2).sum(1)`` if already known (callers that walk ``x`` in many calls
    against the same ``y`` pass it to avoid recomputing it each time; the result is the same).
    """
    xt = as_tensor(x)
    yt = as_tensor(y, device=xt.device)
    y_norms = yt.pow(2).sum(dim=1) if y_squared_norms is None else y_squared_norms  # (b,)
    out = torch.empty((xt.shape[0], yt.shape[0]), dtype=torch.float32, device=xt.device)
    step = block_size or max(xt.shape[0], 1)
    for start in range(0, xt.shape[0], step):
        block = xt[start:start + step]  # (s, d)
        base = block.pow(2).sum(dim=1, keepdim=True) + y_norms[None, :]  # (s, b)
        torch.addmm(base, block, yt.t(), beta=1.0, alpha=-2.0, out=out[start:start + step])
    return like_input(out, x)


def cosine_distance(x: ArrayLike, y: ArrayLike) -> ArrayLike:
    """``1 - cos`` between the rows of ``x`` (a, d) and ``y`` (b, d); (a, b) float32, same kind as ``x``."""
    xt = torch.nn.functional.normalize(as_tensor(x), dim=1)
    yt = torch.nn.functional.normalize(as_tensor(y, device=xt.device), dim=1)
    return like_input(1.0 - xt @ yt.t(), x)
