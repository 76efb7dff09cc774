"""Player re-identification for team sports: the MMSports 2023 winning recipe, rebuilt.

Shared logic of the stage scripts (``download_data.py``, ``preprocess_data.py``, ``train_our_post.py``,
``evaluate.py``, ``predict.py``, ``predict_fortestset.py``, ``export.py``, ``search.py``, ``cluster.py``,
``my_py/*.py``). One job per module: ``layout`` (the data layout), ``inference`` (images -> features),
``scoring`` (features -> scores), ``config`` (the typed configurations), ...; the maths in
``retrieval`` (distances, re-ranking, metrics, fusion) is pure: arrays in, arrays out.

For other programs: ``reid.load_encoder(checkpoint)`` returns a ``reid.inference.ReidEncoder`` whose
``embed(crops)`` gives the features the evaluation computes; ``reid.find_images(folders)`` lists
crops. ``import reid`` alone loads neither torch nor the models (they come with the first use).
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {"load_encoder": "reid.inference", "ReidEncoder": "reid.inference", "find_images": "reid.crops"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
