"""Synthetic clustered re-ID features for benchmarks and tests (no images, no model).

Each identity has a random unit centre; each image is its centre plus isotropic Gaussian noise,
L2-normalised, so that the raw mAP is moderate (~0.5-0.8) and re-ranking has work to do, like the
reference cases (``tests/reference/README.md``, "Synthetic data").
"""

from __future__ import annotations

import numpy as np


def clustered_features(
    num_query: int,
    num_gallery: int,
    dim: int = 768,
    num_ids: int | None = None,
    noise: float = 1.4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Query and gallery features of ``num_ids`` identities (default: one query per identity).

    noise: norm of the noise vector relative to the unit centre (per-dimension sigma = noise / sqrt(dim)).
    Every identity has at least one query and one gallery image when the counts allow; the rest are
    drawn at random, and the gallery is shuffled (no order to exploit).
    Returns ``(query (m, dim) float32, gallery (n, dim) float32, query_ids (m,) int64, gallery_ids (n,) int64)``.
    """
    num_ids = num_ids or num_query
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate([np.arange(min(count, num_ids)), rng.integers(0, num_ids, max(0, count - num_ids))])
        ids = ids[rng.permutation(count)]
        feats = centres[ids] + rng.standard_normal((count, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        return feats, ids.astype(np.int64)

    query, query_ids = draw(num_query)
    gallery, gallery_ids = draw(num_gallery)
    order = np.argsort(query_ids, kind="stable")  # queries sorted by identity, as the test split
    return query[order], gallery, query_ids[order], gallery_ids
