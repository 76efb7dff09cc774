"""reid.retrieval.fusion: the reference fusion case (F1, F2), hand cases; reid.matrices.check_aligned: id checks."""

from __future__ import annotations

import numpy as np
import pytest

from reid.matrices import DistanceMatrix, check_aligned
from reid.retrieval.fusion import dissimilarity_fusion, dissimilarity_weights, round_like_python, similarity_fusion


def fused(function, matrices, **options) -> DistanceMatrix:
    """A fusion of matrices as the fusion scripts make it: ids checked, values fused, the first one's ids kept."""
    return matrices[0].with_values(function(check_aligned(matrices), **options))


@pytest.fixture(scope="module")
def models(reference_dir):
    return [DistanceMatrix.read_csv(reference_dir / f"fusion_seed0_model{k}.csv.gz") for k in range(4)]


@pytest.fixture(scope="module")
def case(reference_dir):
    return np.load(reference_dir / "fusion_seed0.npz")


def test_similarity_fusion_reference(models, case):
    for name, inputs in (("sim4", models), ("sim3", models[:3])):
        fusion = fused(similarity_fusion, inputs)
        assert np.abs(fusion.values - case[f"out_{name}"]).max() <= 1e-5
        np.testing.assert_array_equal(fusion.values, case[f"out_{name}"])  # exact in practice
        np.testing.assert_array_equal(fusion.query_ids, case["query_ids"])
        np.testing.assert_array_equal(fusion.gallery_ids, case["gallery_ids"])
    unit = fused(similarity_fusion, models, weights=[1, 1, 1, 1])
    np.testing.assert_array_equal(unit.values, case["out_sim4"])


@pytest.mark.parametrize("count", [3, 4])
def test_dissimilarity_fusion_reference(models, case, count):
    weights = dissimilarity_weights(check_aligned(models[:count]), topk=15)
    assert np.abs(weights.weights - case[f"weights_dissim{count}"]).max() <= 1e-12
    assert weights.inter0_cnt == case[f"inter0_cnt_dissim{count}"]
    assert weights.cnt2 == case[f"cnt2_dissim{count}"]
    fusion = fused(dissimilarity_fusion, models[:count], topk=15)
    assert np.abs(fusion.values - case[f"out_dissim{count}"]).max() <= 1e-5
    np.testing.assert_array_equal(fusion.values, case[f"out_dissim{count}"])


def test_final_recipe_in_memory(models, case):
    final = fused(similarity_fusion, [fused(similarity_fusion, models), fused(dissimilarity_fusion, models)])
    assert np.abs(final.values - case["out_final_sim4_dissim4"]).max() <= 1e-5


def _matrix(values, query_ids=(1, 2), gallery_ids=(7, 7, 8), source=None):
    return DistanceMatrix(np.array(values, np.float64), list(query_ids), list(gallery_ids), source)


def test_hand_weights_counters_and_inversion():
    # topk 2, three models, agreement needs 2 of 3.
    # query 1: tops {0,1}, {0,1}, {1,2} -> agreed {0,1}: a = 2, 2, 1 -> w = .4,.4,.2 -> inverted 0.25,0.25,0.5
    # query 2: tops {0,1}, {1,2}, {0,2} -> agreed {0,1,2}: a = 2,2,2 -> 1/3 each
    a = _matrix([[0.1, 0.2, 0.9], [0.1, 0.2, 0.3]])
    b = _matrix([[0.1, 0.2, 0.9], [0.9, 0.1, 0.2]])
    c = _matrix([[0.9, 0.1, 0.2], [0.1, 0.9, 0.2]])
    weights = dissimilarity_weights(check_aligned([a, b, c]), topk=2)
    np.testing.assert_allclose(weights.weights, [[0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    assert (weights.inter0_cnt, weights.cnt2) == (0, 0)
    fusion = fused(dissimilarity_fusion, [a, b, c], topk=2)
    np.testing.assert_allclose(fusion.values[0], [0.25 * 0.1 + 0.25 * 0.1 + 0.5 * 0.9, 0.2 * 0.5 + 0.1 * 0.5, 0.9 * 0.5 + 0.2 * 0.5])
    # no agreement at all: uniform weights, counted once per model; a model without agreed items: 0.1 floor
    d = _matrix([[0.1, 0.9, 0.9], [0.1, 0.2, 0.3]])
    e = _matrix([[0.9, 0.1, 0.9], [0.1, 0.2, 0.3]])
    f = _matrix([[0.9, 0.9, 0.1], [0.9, 0.9, 0.1]])
    weights = dissimilarity_weights(check_aligned([d, e, f]), topk=1)
    np.testing.assert_allclose(weights.weights[0], [1 / 3] * 3)
    # query 2: agreed {0} (models d, e); f shares none: w = .5, .5, .1 -> inverted (2, 2, 10) / 14
    np.testing.assert_allclose(weights.weights[1], [2 / 14, 2 / 14, 10 / 14])
    assert (weights.inter0_cnt, weights.cnt2) == (3, 1)


def test_weighted_similarity_fusion_and_rounding():
    a = _matrix([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = _matrix([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(fused(similarity_fusion, [a, b], weights=[3, 1]).values, [[1.5, 2, 2.5], [0.25, 0.25, 0.25]])
    np.testing.assert_allclose(fused(similarity_fusion, [a, b]).values, [[2, 2, 2], [0.5, 0.5, 0.5]])
    c = _matrix([[0.123456, 0, 0], [0, 0, 0]])
    assert fused(similarity_fusion, [c]).values[0, 0] == 0.12346
    assert fused(similarity_fusion, [c], decimals=None).values[0, 0] == 0.123456
    assert similarity_fusion([np.ones((2, 3), np.float32)]).dtype == np.float32
    with pytest.raises(ValueError, match="2 weights for 1 matrices"):
        similarity_fusion([a.values], weights=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        similarity_fusion([a.values, b.values], weights=[1, -1])


def test_round_like_python_matches_builtin_round():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(20000) * 4, np.arange(-640, 640) / 64.0 / 100, [0.000005, 1.000015, 2.675, -0.0, 1.234565]])
    expected = np.array([round(float(v), 5) for v in values])
    np.testing.assert_array_equal(round_like_python(values, 5), expected)
    special = round_like_python(np.array([np.inf, -np.inf, np.nan]), 5)
    assert np.isposinf(special[0]) and np.isneginf(special[1]) and np.isnan(special[2])


def test_mismatched_ids_name_the_matrix_and_position():
    a = _matrix([[0, 0, 0], [0, 0, 0]], source="runs/a.csv")
    b = _matrix([[0, 0, 0], [0, 0, 0]], gallery_ids=(7, 8, 8), source="runs/b.csv")
    with pytest.raises(ValueError, match=r"matrix 2 \(runs/b.csv\) does not match matrix 1 \(runs/a.csv\): "
                                         r"gallery ids differ first at gallery position 1"):
        check_aligned([a, b])
    c = _matrix([[0, 0, 0], [0, 0, 0]], query_ids=(1, 3))
    with pytest.raises(ValueError, match=r"matrix 3 \(matrix in memory\).*query ids differ first at query position 1 \(0-based\): 3 vs 2"):
        check_aligned([a, a, c])
    d = DistanceMatrix(np.zeros((2, 2)), [1, 2], [7, 7], source="runs/d.csv")
    with pytest.raises(ValueError, match=r"matrix 2 \(runs/d.csv\) does not match matrix 1 \(runs/a.csv\): "
                                         r"gallery ids: matrix 2 has 2, matrix 1 has 3"):
        check_aligned([a, d])
    with pytest.raises(TypeError, match="expected a DistanceMatrix"):
        check_aligned([a, np.zeros((2, 3))])
