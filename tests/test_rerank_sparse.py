"""Sparse, features-in re-rankings: equal to the reference cases and to the dense definitions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import reid.sparse_rows as sparse_rows
from reid.distance import squared_euclidean
from reid.rerank import DENSE_THRESHOLD, classic, classic_from_features, hard_weight, hard_weight_from_features, rerank
from reid.rerank_sparse import _expand_gallery, _expand_queries
from reid.sparse_rows import sequential_row_means
from reid.synthetic_features import clustered_features

TOLERANCE = 1e-5  # reference README: float32 distance matrices


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("variant", "key"), [("classic_l03", "dist_rerank_l03"), ("classic_l07", "dist_rerank_l07"), ("hard_weight", "dist_hardweight")])
def test_reference_cases(reference_dir, seed, variant, key):
    case = np.load(reference_dir / f"test_seed{seed}.npz")
    q, g = case["query_feats"], case["gallery_feats"]
    if variant == "hard_weight":
        out = hard_weight_from_features(q, g, k1=20, k2=6, lambda_value=0.7)
    else:
        out = classic_from_features(q, g, k1=20, k2=6, lambda_value=0.3 if variant == "classic_l03" else 0.7)
    assert out.dtype == np.float32 and out.shape == case[key].shape
    assert np.abs(out - case[key]).max() <= TOLERANCE


CASES = [  # (num_ids, queries per id, gallery per id, dim, noise, k1, k2, lambda)
    (30, 2, 15, 32, 2.4, 20, 6, 0.3),
    (40, 1, 12, 16, 2.0, 7, 3, 0.5),
    (25, 3, 20, 64, 1.2, 20, 6, 0.7),
    (60, 1, 8, 24, 2.0, 10, 1, 0.7),
]


def _case(seed, num_ids, per_query, per_gallery, dim, noise):
    return clustered_features(num_ids * per_query, num_ids * per_gallery, dim, num_ids=num_ids, noise=noise, seed=seed)[:2]


def classic_dense(q, g, **kwargs):
    """The dense reference path (``reid.rerank.classic``) on the distances of q and g."""
    return classic(squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g), **kwargs)


hard_weight_dense = hard_weight


@pytest.mark.parametrize("seed", range(len(CASES)))
def test_equal_to_dense_definitions(seed):
    num_ids, per_q, per_g, dim, noise, k1, k2, lam = CASES[seed]
    q, g = _case(seed, num_ids, per_q, per_g, dim, noise)
    classic = classic_from_features(q, g, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(classic, classic_dense(q, g, k1=k1, k2=k2, lambda_value=lam), rtol=0, atol=TOLERANCE)
    hard = hard_weight_from_features(q, g, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(hard, hard_weight_dense(q, g, k1=k1, k2=k2, lambda_value=lam), rtol=0, atol=TOLERANCE)


def test_exact_duplicates_are_ranked_as_the_dense_code_ranks_them():
    # 120 gallery images appear twice and 5 queries are copies of gallery images: exact distance
    # ties. Classic orders tied rows with numpy's argsort as the dense code (a plain torch.topk order
    # differs here by ~5e-3), hard-weight keeps torch.topk's order.
    q, g, _, _ = clustered_features(60, 600, 32, num_ids=30, noise=1.5, seed=1)
    rng = np.random.default_rng(1)
    g = np.concatenate([g, g[rng.choice(len(g), 120, replace=False)]])[rng.permutation(len(g) + 120)]
    q = np.concatenate([q, g[:5]])
    np.testing.assert_allclose(classic_from_features(q, g, k1=7), classic_dense(q, g, k1=7), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(hard_weight_from_features(q, g), hard_weight_dense(q, g), rtol=0, atol=TOLERANCE)


def test_list_aliasing_case_is_reproduced():
    # on this case the walk's extension by H(first merged item) changes the result by ~2e-3
    q, g = _case(2, 25, 3, 20, 64, 1.2)
    np.testing.assert_allclose(hard_weight_from_features(q, g), hard_weight_dense(q, g), rtol=0, atol=TOLERANCE)


def test_query_expansion_hand_case():
    # R(p) = [1, 0, 2]. H(1) passes (|{1,0}| = 2 >= 2/3 * 3) and is the first merge: the walk is
    # extended by [1, 0, 3]; H(2) also passes (adds 7) but extends nothing; the extension visits 3,
    # whose H(3) passes (adds 6). 7 is never visited, so H(7) (would add 8) is not merged.
    half = np.full((9, 3), -1)
    half[0], half[1], half[2], half[3], half[7] = [0, 4, 5], [1, 0, 3], [2, 1, 7], [1, 0, 6], [0, 1, 8]
    sizes = (half >= 0).sum(axis=1)
    out = _expand_queries(np.array([[1, 0, 2]]), half, sizes, 2 / 3, 9)
    assert out.indices.tolist() == [0, 1, 2, 3, 6, 7]
    assert (out.data == 1).all()


def test_gallery_expansion_uses_the_set_without_its_first_item():
    # R(0) = [0, 1, 2]; A = [1, 2]. H(1) = [1, 2, 5]: |A ∩ H| = 2 >= 2 -> merged. H(2) = [2, 0, 6]:
    # |A ∩ H| = 1 < 2 (0 is not in A) -> not merged, although 0 is in R(0).
    sets = np.full((7, 3), -1)
    sets[0] = [0, 1, 2]
    half = np.full((7, 3), -1)
    half[1], half[2] = [1, 2, 5], [2, 0, 6]
    out = _expand_gallery(sets, half, (half >= 0).sum(axis=1), 2 / 3)
    assert out[0].indices.tolist() == [0, 1, 2, 5]


def test_sequential_row_means_equals_the_loop():
    rng = np.random.default_rng(0)
    r, extra_rows, cols, k = 40, 15, 30, 4
    rows = sp.random(r, cols, density=0.2, random_state=1, dtype=np.float32, format="csr")
    extra = sp.random(extra_rows, cols, density=0.2, random_state=2, dtype=np.float32, format="csr")
    neighbours = np.stack([rng.choice(r + extra_rows, k, replace=False) for _ in range(r)])
    current, fixed_extra = rows.toarray(), extra.toarray()
    for i in range(r):  # the published in-place loop
        current[i] = sum(current[j] if j < r else fixed_extra[j - r] for j in neighbours[i]) / k
    out = sequential_row_means(rows, neighbours, extra=extra)
    np.testing.assert_allclose(out.toarray(), current, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rerank", [classic_from_features, hard_weight_from_features])
def test_topk_mode_is_the_head_of_the_full_matrix(rerank):
    q, g = _case(5, 30, 2, 12, 32, 2.0)
    full = rerank(q, g)
    indices, distances = rerank(q, g, topk=7)
    assert indices.shape == distances.shape == (len(q), 7)
    assert indices.dtype == np.int64 and distances.dtype == np.float32
    np.testing.assert_array_equal(distances, np.take_along_axis(full, indices, axis=1))
    np.testing.assert_array_equal(indices, np.argsort(full, axis=1, kind="stable")[:, :7])


@pytest.mark.parametrize("rerank", [classic_from_features, hard_weight_from_features])
def test_block_size_and_chunking_do_not_change_results(rerank, monkeypatch):
    q, g = _case(6, 40, 2, 10, 32, 2.0)
    reference = rerank(q, g)
    assert np.array_equal(rerank(q, g, block_size=64), reference)  # distance blocks: bit-identical
    monkeypatch.setattr(sparse_rows, "TRIPLES_PER_CHUNK", 20_000)  # many Jaccard chunks: same sums up to rounding
    np.testing.assert_allclose(rerank(q, g, block_size=100), reference, rtol=0, atol=1e-6)


def test_torch_inputs_and_bad_shapes():
    q, g = _case(7, 10, 1, 8, 16, 2.0)
    np.testing.assert_array_equal(classic_from_features(torch.from_numpy(q), torch.from_numpy(g)), classic_from_features(q, g))
    with pytest.raises(ValueError, match="same d"):
        hard_weight_from_features(q, g[:, :8])
    with pytest.raises(ValueError, match="topk"):
        classic_from_features(q, g, topk=len(g) + 1)
    with pytest.raises(ValueError, match="k2"):
        hard_weight_from_features(q, g, k1=5, k2=6)


def test_rerank_picks_dense_or_sparse_by_size():
    q, g = _case(9, 20, 1, 10, 32, 2.0)
    assert len(q) + len(g) < DENSE_THRESHOLD
    for method, dense in [("classic", classic_dense(q, g, lambda_value=0.7)), ("hard_weight", hard_weight_dense(q, g))]:
        np.testing.assert_array_equal(rerank(q, g, method=method, lambda_value=0.7), dense)
        sparse = rerank(q, g, method=method, lambda_value=0.7, dense_threshold=10)
        np.testing.assert_allclose(sparse, dense, rtol=0, atol=TOLERANCE)
        indices, distances = rerank(q, g, method=method, lambda_value=0.7, topk=3)
        np.testing.assert_array_equal(distances, np.sort(dense, axis=1)[:, :3])
    with pytest.raises(ValueError, match="method"):
        rerank(q, g, method="fast")


def test_prediction_and_evaluation_switch_to_the_sparse_path_above_the_threshold():
    from reid.evaluation import evaluate_features
    from reid.evaluation import distance_matrices

    q, g, q_ids, g_ids = clustered_features(20, 200, 32, num_ids=20, noise=2.0, seed=10)
    dense, sparse = distance_matrices(q, g), distance_matrices(q, g, dense_threshold=100)
    for name in ("raw", "classic", "hard"):
        np.testing.assert_allclose(sparse[name], dense[name], rtol=0, atol=TOLERANCE)
    dense_scores = evaluate_features(q, g, q_ids, g_ids)
    sparse_scores = evaluate_features(q, g, q_ids, g_ids, dense_threshold=100)
    assert sparse_scores == pytest.approx(dense_scores, abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rerank", [classic_from_features, hard_weight_from_features])
def test_cuda_equals_cpu(rerank):
    q, g = _case(8, 40, 2, 15, 64, 2.0)
    np.testing.assert_allclose(rerank(q, g, device="cuda"), rerank(q, g), rtol=0, atol=TOLERANCE)
    cuda_idx, cuda_dist = rerank(q, g, topk=5, device="cuda")
    cpu_idx, cpu_dist = rerank(q, g, topk=5)
    np.testing.assert_allclose(cuda_dist, cpu_dist, rtol=0, atol=TOLERANCE)
