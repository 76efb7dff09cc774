"""Player re-identification for team sports: the MMSports 2023 winning recipe, rebuilt.

Shared logic of the stage scripts (``download_data.py``, ``preprocess_data.py``, ``train_our_post.py``,
``evaluate.py``, ``predict.py``, ``predict_fortestset.py``, ``my_py/*.py``). One job per module; the
maths modules (``distance``, ``rerank``, ``fusion``, ``metrics``) are pure: arrays in, arrays out.
"""

__version__ = "0.1.0"
