"""numpy arrays and torch tensors: the one alias and the two conversions the maths modules share.

Importing this module does not import torch: ``as_numpy`` recognises a tensor only when torch is
already loaded (otherwise nothing can be one), so the numpy-only modules (``metrics``) stay light.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayLike = Union[np.ndarray, "torch.Tensor"]


def is_tensor(value: Any) -> bool:
    """True for a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array of ``value`` (a tensor on any device, an array, a list): ``np.asarray`` after moving a tensor to the CPU."""
    if is_tensor(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def as_tensor(array: ArrayLike, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """numpy array or tensor -> float32 (or ``dtype``) tensor on ``device`` (default: where it already is; numpy -> CPU)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    return tensor.to(device=device if device is not None else tensor.device, dtype=dtype or torch.float32)


def like_input(result: torch.Tensor, reference: ArrayLike) -> ArrayLike:
    """``result`` as numpy when ``reference`` is numpy, else unchanged (the maths functions return what they get)."""
    return result.cpu().numpy() if isinstance(reference, np.ndarray) else result
