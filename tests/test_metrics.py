"""reid.retrieval.metrics: hand-computed cases, a plain per-query loop, the reference cases, torch agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from reid.retrieval import metrics
from reid.retrieval.metrics import cmc, evaluate, mean_ap, mean_inp
from tests.plain_postprocess import plain_scores

DISTANCES = ("raw", "rerank_l07", "rerank_l03", "hardweight")


# ---------------------------------------------------------------- hand-computed cases

def test_hand_case_ap_inp_and_cmc():
    # ranking: match, non-match, match, non-match
    dist = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    q, g = [1], [1, 2, 1, 2]
    assert mean_ap(dist, q, g) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert mean_inp(dist, q, g) == pytest.approx(2 / 3)  # 2 matches, hardest at rank 3
    np.testing.assert_allclose(cmc(dist, q, g, topk=4, config="market1501"), [1, 1, 1, 1])
    # allshots: the 1st match adds 1/2 at 0, the 2nd (one non-match before it) 1/2 at 1
    np.testing.assert_allclose(cmc(dist, q, g, topk=4, config="allshots"), [0.5, 1, 1, 1])


def test_ties_form_one_threshold_like_sklearn():
    # non-match, then {match, non-match} tied, then match
    dist = np.array([[0.1, 0.2, 0.2, 0.4]], np.float32)
    q, g = [1], [2, 1, 2, 1]
    expected = 0.5 * (1 / 3) + 0.5 * (2 / 4)
    assert mean_ap(dist, q, g) == pytest.approx(expected)
    assert average_precision_score([0, 1, 0, 1], -dist[0]) == pytest.approx(expected)
    assert mean_ap(dist[:, [0, 2, 1, 3]], q, [2, 2, 1, 1]) == pytest.approx(expected)  # order inside the tie
    # the hardest match tied with a non-match counts it as ranked before: INP = 2 / 3 either way
    assert mean_inp(np.array([[0.1, 0.3, 0.3]], np.float32), [1], [1, 2, 1]) == pytest.approx(2 / 3)
    assert mean_inp(np.array([[0.1, 0.3, 0.3]], np.float32), [1], [1, 1, 2]) == pytest.approx(2 / 3)


def test_queries_without_a_true_match_are_skipped():
    dist = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], np.float32)
    g = [5, 6, 5]
    assert mean_ap(dist, [5, 9], g) == pytest.approx((1 + 2 / 3) / 2)  # query 9 has no match: ignored
    assert mean_inp(dist, [5, 9], g) == pytest.approx(2 / 3)
    np.testing.assert_allclose(cmc(dist, [5, 9], g, topk=3), [1, 1, 1])
    with pytest.raises(RuntimeError, match="no query"):
        mean_ap(dist, [8, 9], g)


def test_same_camera_matches_are_excluded():
    # gallery: id 1 by the query's camera (excluded), id 1 by another camera, id 2 by the query's camera
    dist = np.array([[0.1, 0.2, 0.15]], np.float32)
    q, g, qc, gc = [1], [1, 1, 2], [0], [0, 1, 0]
    assert mean_ap(dist, q, g, qc, gc) == pytest.approx(1 / 2)  # valid ranking: id 2, id 1
    np.testing.assert_allclose(cmc(dist, q, g, qc, gc, topk=2), [0, 1])
    with pytest.raises(RuntimeError):  # the only match is from the query's camera
        mean_ap(dist[:, :1], q, g[:1], qc, gc[:1])


def test_cuhk03_single_shot_hand_case_and_rng_stream():
    # identities by first appearance: 2 (two items), 1 (the match), 3; one id-2 item is always kept before it
    dist = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    rng = np.random.RandomState(7)
    curve = cmc(dist, [1], [2, 2, 1, 3], [0], [1, 1, 1, 1], topk=3, config="cuhk03", rng=rng)
    np.testing.assert_allclose(curve, [0, 1, 1])
    check = np.random.RandomState(7)
    for _ in range(10):  # one draw for the two-item identity per repeat; single items draw nothing
        check.randint(0, 2)
    assert rng.randint(0, 1 << 30) == check.randint(0, 1 << 30)


# ---------------------------------------------------------------- against a plain per-query loop

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_a_plain_loop_with_ties_cameras_and_missing_matches(seed):
    rng = np.random.default_rng(seed)
    m, n = 23, 157
    g_ids = rng.integers(0, 30, n)
    q_ids = np.concatenate([rng.choice(g_ids, m - 2), [1000, 1001]])  # two queries without a match
    q_cams, g_cams = rng.integers(0, 3, m), rng.integers(0, 3, n)
    dist = np.round(rng.random((m, n)), 2).astype(np.float32)  # many ties
    np.random.seed(seed)
    expected_ap, expected_inp, expected_cmc = plain_scores(dist, q_ids, g_ids, q_cams, g_cams)
    assert mean_ap(dist, q_ids, g_ids, q_cams, g_cams) == pytest.approx(expected_ap, abs=1e-12)
    assert mean_inp(dist, q_ids, g_ids, q_cams, g_cams) == pytest.approx(expected_inp, abs=1e-12)
    for name in metrics.CMC_CONFIGS:
        np.random.seed(seed)
        curve = cmc(dist, q_ids, g_ids, q_cams, g_cams, topk=20, config=name)
        np.testing.assert_allclose(curve, expected_cmc[name], atol=1e-12, err_msg=name)


def test_blocks_and_evaluate_give_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(3)
    dist = rng.random((40, 90)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, 12, 40), rng.integers(0, 12, 90)
    np.random.seed(5)
    whole = evaluate(dist, q_ids, g_ids)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 200)  # blocks of one or two query rows
    np.random.seed(5)
    blocked = evaluate(dist, q_ids, g_ids)
    assert blocked.mAP == pytest.approx(whole.mAP, abs=1e-15) and blocked.mINP == pytest.approx(whole.mINP, abs=1e-15)
    for name in metrics.CMC_CONFIGS:
        np.testing.assert_allclose(blocked.cmc[name], whole.cmc[name], atol=1e-15)
        np.random.seed(5)
        np.testing.assert_allclose(cmc(dist, q_ids, g_ids, config=name), whole.cmc[name], atol=1e-15)
    assert whole.mAP == pytest.approx(mean_ap(dist, q_ids, g_ids)) and whole.mINP == pytest.approx(mean_inp(dist, q_ids, g_ids))
    assert "rank-5" in whole.table() and "cuhk03" in whole.table()


def test_building_blocks_on_a_truncated_top_k_list():
    rng = np.random.default_rng(4)
    dist = rng.random((6, 50)).astype(np.float32)
    g_ids = np.repeat(np.arange(10), 5)
    q_ids = np.arange(6)
    dist[np.arange(6)[:, None], (q_ids[:, None] * 5 + np.arange(5))] *= 0.05  # every match in the top 10
    (ranked,) = metrics.ranked_blocks(dist, q_ids, g_ids)
    full = metrics.average_precision(ranked)
    top = metrics.RankedGallery(ranked.distances[:, :10], ranked.gallery_codes[:, :10], ranked.query_codes,
                                ranked.same_camera[:, :10], ranked.num_identities)
    np.testing.assert_allclose(metrics.average_precision(top, num_matches=np.full(6, 5)), full)
    np.testing.assert_allclose(metrics.inverse_negative_penalty(top, num_matches=np.full(6, 5)),
                               metrics.inverse_negative_penalty(ranked))


# ---------------------------------------------------------------- the published implementation's numbers

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("distance", DISTANCES)
def test_reference_cases(reference_dir, seed, distance):
    case = np.load(reference_dir / f"test_seed{seed}.npz")
    args = (case[f"dist_{distance}"], case["query_ids"], case["gallery_ids"], case["query_cams"], case["gallery_cams"])
    assert abs(mean_ap(*args) - case[f"mAP_{distance}"]) <= 1e-6
    for name in metrics.CMC_CONFIGS:
        np.random.seed(12345)
        curve = cmc(*args, topk=100, config=name)
        np.testing.assert_allclose(curve, case[f"cmc_{name}_{distance}"], rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(curve[[0, 4, 9]], case[f"cmc_top_1_5_10_{name}_{distance}"], rtol=0, atol=1e-9)
    scores = evaluate(*args, rng=np.random.RandomState(12345))
    np.testing.assert_allclose(scores.cmc["cuhk03"], case[f"cmc_cuhk03_{distance}"], rtol=0, atol=1e-9)


def test_fusion_case_map(reference_dir):
    case = np.load(reference_dir / "fusion_seed0.npz")
    for k in range(4):
        assert abs(mean_ap(case["fusion_inputs_csv"][k], case["query_ids"], case["gallery_ids"]) - case[f"mAP_input{k}"]) <= 1e-6
    for name in ("sim4", "sim3", "dissim3", "dissim4", "final_sim4_dissim4"):
        assert abs(mean_ap(case[f"out_{name}"], case["query_ids"], case["gallery_ids"]) - case[f"mAP_{name}"]) <= 1e-6


# ---------------------------------------------------------------- torch

def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_torch_input_gives_the_same_numbers(device, reference_dir):
    case = np.load(reference_dir / "test_seed1.npz")
    dist, q_ids, g_ids = case["dist_rerank_l07"], case["query_ids"], case["gallery_ids"]
    tensor = torch.from_numpy(dist).to(device)
    assert mean_ap(tensor, torch.from_numpy(q_ids), g_ids) == pytest.approx(mean_ap(dist, q_ids, g_ids), abs=1e-12)
    assert mean_inp(tensor, q_ids, g_ids) == pytest.approx(mean_inp(dist, q_ids, g_ids), abs=1e-12)
    for name in metrics.CMC_CONFIGS:
        expected = cmc(dist, q_ids, g_ids, config=name, rng=np.random.RandomState(0))
        got = cmc(tensor, q_ids, g_ids, config=name, rng=np.random.RandomState(0))
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("device", _devices())
def test_torch_agrees_with_cameras_and_missing_matches(device):
    rng = np.random.default_rng(6)
    m, n = 31, 240
    g_ids = rng.integers(0, 25, n)
    q_ids = np.concatenate([rng.choice(g_ids, m - 3), [500, 501, 502]])
    q_cams, g_cams = rng.integers(0, 3, m), rng.integers(0, 3, n)
    dist = rng.random((m, n)).astype(np.float32)  # no ties: both sorts give the same order
    expected = evaluate(dist, q_ids, g_ids, q_cams, g_cams, rng=np.random.RandomState(1))
    got = evaluate(torch.from_numpy(dist).to(device), torch.from_numpy(q_ids), g_ids, torch.from_numpy(q_cams), g_cams,
                   rng=np.random.RandomState(1))
    assert got.mAP == pytest.approx(expected.mAP, abs=1e-12) and got.mINP == pytest.approx(expected.mINP, abs=1e-12)
    for name in metrics.CMC_CONFIGS:
        np.testing.assert_allclose(got.cmc[name], expected.cmc[name], atol=1e-12, err_msg=name)
