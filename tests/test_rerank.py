"""Re-ranking, both variants, both front ends (given matrices / features): the reference cases, the
plain line-by-line implementations of the reference README's R1 / R2, the published quirks, torch
inputs, the top-K and streamed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reid.retrieval.sparse_rows as sparse_rows
from reid.retrieval.distance import squared_euclidean
from reid.retrieval.hard_weight import _expand_gallery, _expand_queries
from reid.retrieval.rerank import classic, classic_from_features, hard_weight, hard_weight_from_features, rerank
from reid.synthetic.features import clustered_features
from tests.plain_postprocess import plain_classic, plain_hard_weight

TOLERANCE = 1e-5  # reference README: float32 distance matrices


def _clustered(seed, players=12, per_player=14, dim=8, sigma=0.35, duplicates=True):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(players, dim))
    q = centres + sigma * rng.normal(size=(players, dim))
    gallery_ids = np.repeat(np.arange(players), per_player)
    g = centres[gallery_ids] + sigma * rng.normal(size=(len(gallery_ids), dim))
    if duplicates:  # identical images give exact ties in every distance
        g[5] = g[4]
        g[40] = g[41] = g[42]
        q[3] = g[50]
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    return q, g


def classic_from_matrices(q, g, **kwargs):
    """The published signature, on the distances of q and g."""
    return classic(squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g), **kwargs)


CLASSIC_FRONT_ENDS = [classic_from_matrices, classic_from_features]
HARD_WEIGHT_FRONT_ENDS = [hard_weight, hard_weight_from_features]


@pytest.mark.parametrize("front_end", CLASSIC_FRONT_ENDS)
@pytest.mark.parametrize("seed, k1, k2, lambda_value", [(0, 20, 6, 0.3), (1, 10, 4, 0.7), (2, 7, 1, 0.5), (3, 21, 6, 0.3)])
def test_classic_equals_plain_dense_version(front_end, seed, k1, k2, lambda_value):
    q, g = _clustered(seed)
    qg, qq, gg = squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g)
    expected = plain_classic(qg, qq, gg, k1, k2, lambda_value)
    got = front_end(q, g, k1=k1, k2=k2, lambda_value=lambda_value)
    assert got.dtype == np.float32 and got.shape == qg.shape
    assert np.abs(got - expected).max() <= 1e-6


def test_classic_reads_asymmetric_matrices_by_column_as_published():
    # the published code normalises the columns of [[qq, qg], [qg^T, gg]] and transposes: with
    # asymmetric qq / gg, row i of its working distance is column i, not row i
    q, g = _clustered(4, duplicates=False)
    rng = np.random.default_rng(4)
    qg, qq, gg = squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g)
    qq, gg = (d + rng.uniform(0, 0.2, d.shape).astype(np.float32) for d in (qq, gg))
    expected = plain_classic(qg, qq, gg, 20, 6, 0.3)
    assert np.abs(classic(qg, qq, gg) - expected).max() <= 1e-6
    assert np.abs(classic(qg, qq.T.copy(), gg.T.copy()) - expected).max() > 1e-3  # the reading matters here


@pytest.mark.parametrize("front_end", HARD_WEIGHT_FRONT_ENDS)
@pytest.mark.parametrize("seed, k1, k2, threshold", [(0, 20, 6, 2 / 3), (1, 10, 4, 2 / 3), (2, 8, 3, 0.5), (3, 20, 6, 0.9)])
def test_hard_weight_equals_plain_dense_version(front_end, seed, k1, k2, threshold):
    q, g = _clustered(seed, sigma=0.5)
    expected = plain_hard_weight(q, g, k1, k2, 0.7, threshold)
    got = front_end(q, g, k1=k1, k2=k2, lambda_value=0.7, expansion_threshold=threshold)
    assert got.dtype == np.float32 and got.shape == (len(q), len(g))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) <= 1e-6


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("variant", "key"), [("classic_l03", "dist_rerank_l03"), ("classic_l07", "dist_rerank_l07"),
                                              ("hard_weight", "dist_hardweight")])
def test_reference_cases(reference_dir, seed, variant, key):
    case = np.load(reference_dir / f"test_seed{seed}.npz")
    q, g = case["query_feats"], case["gallery_feats"]
    if variant == "hard_weight":
        outputs = [front_end(q, g, k1=20, k2=6, lambda_value=0.7, expansion_threshold=2 / 3) for front_end in HARD_WEIGHT_FRONT_ENDS]
    else:
        lambda_value = 0.3 if variant == "classic_l03" else 0.7
        outputs = [classic(case["dist_raw"], case["dist_qq"], case["dist_gg"], k1=20, k2=6, lambda_value=lambda_value),
                   classic_from_features(q, g, k1=20, k2=6, lambda_value=lambda_value)]
    for out in outputs:
        assert out.dtype == np.float32 and out.shape == case[key].shape
        assert np.abs(out - case[key]).max() <= TOLERANCE


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_torch_inputs_compute_on_their_device(reference_dir, device):
    case = np.load(reference_dir / "test_seed0.npz")
    tensors = [torch.from_numpy(case[k]).to(device) for k in ("dist_raw", "dist_qq", "dist_gg")]
    got = classic(*tensors, k1=20, k2=6, lambda_value=0.7)
    assert isinstance(got, torch.Tensor) and got.device.type == device and got.dtype == torch.float32
    assert np.abs(got.cpu().numpy() - case["dist_rerank_l07"]).max() <= TOLERANCE
    feats = [torch.from_numpy(case[k]).to(device) for k in ("query_feats", "gallery_feats")]
    got = hard_weight(*feats)
    assert isinstance(got, torch.Tensor) and got.device.type == device
    assert np.abs(got.cpu().numpy() - case["dist_hardweight"]).max() <= TOLERANCE


CASES = [  # (num_ids, queries per id, gallery per id, dim, noise, k1, k2, lambda)
    (30, 2, 15, 32, 2.4, 20, 6, 0.3),
    (40, 1, 12, 16, 2.0, 7, 3, 0.5),
    (25, 3, 20, 64, 1.2, 20, 6, 0.7),
    (60, 1, 8, 24, 2.0, 10, 1, 0.7),
]


def _case(seed, num_ids, per_query, per_gallery, dim, noise):
    return clustered_features(num_ids * per_query, num_ids * per_gallery, dim, num_ids=num_ids, noise=noise, seed=seed)[:2]


def _plain_classic(q, g, **kwargs):
    return plain_classic(squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g), **kwargs)


@pytest.mark.parametrize("seed", range(len(CASES)))
def test_noisy_clusters_equal_the_plain_versions(seed):
    num_ids, per_q, per_g, dim, noise, k1, k2, lam = CASES[seed]
    q, g = _case(seed, num_ids, per_q, per_g, dim, noise)
    expected = _plain_classic(q, g, k1=k1, k2=k2, lambda_value=lam)
    for front_end in CLASSIC_FRONT_ENDS:
        np.testing.assert_allclose(front_end(q, g, k1=k1, k2=k2, lambda_value=lam), expected, rtol=0, atol=TOLERANCE)
    hard = hard_weight_from_features(q, g, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(hard, plain_hard_weight(q, g, k1, k2, lam), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("k1, k2", [(1, 1), (2, 1), (2, 2)])
def test_smallest_neighbourhoods_equal_the_plain_versions(k1, k2):
    # search.py shrinks k1 to what tiny sets allow; with k1 = 1 hard-weight's gallery expansion has no
    # neighbours and gives 0 / 0 = NaN everywhere, as published
    q, g = _case(11, 3, 1, 13, 8, 1.5)
    np.testing.assert_allclose(classic_from_features(q, g, k1=k1, k2=k2), _plain_classic(q, g, k1=k1, k2=k2), rtol=0, atol=TOLERANCE)
    got, expected = hard_weight_from_features(q, g, k1=k1, k2=k2), plain_hard_weight(q, g, k1, k2)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=0, atol=TOLERANCE)


def test_exact_duplicates_are_ranked_as_the_published_code_ranks_them():
    # 120 gallery images appear twice and 5 queries are copies of gallery images: exact distance
    # ties. Classic orders tied rows with numpy's argsort as the published code (a plain torch.topk
    # order differs here by ~5e-3), hard-weight keeps torch.topk's order.
    q, g, _, _ = clustered_features(60, 600, 32, num_ids=30, noise=1.5, seed=1)
    rng = np.random.default_rng(1)
    g = np.concatenate([g, g[rng.choice(len(g), 120, replace=False)]])[rng.permutation(len(g) + 120)]
    q = np.concatenate([q, g[:5]])
    expected = _plain_classic(q, g, k1=7)
    for front_end in CLASSIC_FRONT_ENDS:
        np.testing.assert_allclose(front_end(q, g, k1=7), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(hard_weight_from_features(q, g), plain_hard_weight(q, g), rtol=0, atol=TOLERANCE)


def test_list_aliasing_case_is_reproduced():
    # on this case the walk's extension by H(first merged item) changes the result by ~2e-3
    q, g = _case(2, 25, 3, 20, 64, 1.2)
    np.testing.assert_allclose(hard_weight_from_features(q, g), plain_hard_weight(q, g), rtol=0, atol=TOLERANCE)


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
    with pytest.raises(ValueError, match="dist_gg"):
        classic(squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g[1:], g[1:]))


def test_rerank_runs_the_named_variant_from_features():
    q, g = _case(9, 20, 1, 10, 32, 2.0)
    expected = {"classic": classic_from_matrices(q, g, lambda_value=0.7), "hard_weight": plain_hard_weight(q, g)}
    for method, variant in [("classic", classic_from_features), ("hard_weight", hard_weight_from_features)]:
        out = rerank(q, g, method=method, lambda_value=0.7)
        np.testing.assert_array_equal(out, variant(q, g, lambda_value=0.7))
        np.testing.assert_allclose(out, expected[method], rtol=0, atol=TOLERANCE)
        indices, distances = rerank(q, g, method=method, lambda_value=0.7, topk=3)
        np.testing.assert_array_equal(distances, np.sort(out, axis=1)[:, :3])
    with pytest.raises(ValueError, match="method"):
        rerank(q, g, method="fast")


def test_prediction_and_evaluation_matrices_are_the_re_rankings():
    from reid.scoring import distance_matrices

    q, g, _, _ = clustered_features(20, 200, 32, num_ids=20, noise=2.0, seed=10)
    matrices = distance_matrices(q, g)
    np.testing.assert_array_equal(matrices["raw"], squared_euclidean(q, g))
    np.testing.assert_allclose(matrices["classic"], classic_from_matrices(q, g, lambda_value=0.7), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(matrices["hard"], plain_hard_weight(q, g, lambda_value=0.7), rtol=0, atol=TOLERANCE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rerank", [classic_from_features, hard_weight_from_features])
def test_cuda_equals_cpu(rerank):
    q, g = _case(8, 40, 2, 15, 64, 2.0)
    np.testing.assert_allclose(rerank(q, g, device="cuda"), rerank(q, g), rtol=0, atol=TOLERANCE)
    cuda_idx, cuda_dist = rerank(q, g, topk=5, device="cuda")
    cpu_idx, cpu_dist = rerank(q, g, topk=5)
    np.testing.assert_allclose(cuda_dist, cpu_dist, rtol=0, atol=TOLERANCE)
