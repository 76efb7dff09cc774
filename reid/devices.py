"""Where the work runs: one device policy for training, evaluate.py, predict.py, search.py, cluster.py and the API.

``resolve_device("auto")`` is this process's GPU when CUDA is available (``cuda:LOCAL_RANK`` under
torchrun, else the first GPU) and the CPU otherwise; any other name is a torch device string
(``cpu``, ``cuda``, ``cuda:1``), and a GPU asked for where none is visible is an ``InputError``.
Features are extracted on that device, and their distances and re-rankings run on it too
(``reid.scoring`` takes the device and moves the features there), so a run on a GPU never leaves
the re-rankings to the CPU.
"""

from __future__ import annotations

import torch

from reid.errors import InputError


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:local_rank`` when CUDA is available, else ``cpu``; another value -> that torch device."""
    if isinstance(device, torch.device):
        chosen = device
    elif device == "auto":
        chosen = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise InputError(f"device {device!r}: expected auto, cpu, cuda or cuda:<index>") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: no GPU is visible here; use cpu or auto")
    return chosen
