"""predict_fortestset.py: scores of a saved matrix, id checks against train_df and the challenge truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plain_postprocess import CMC_CONFIGS, plain_scores

from predict_fortestset import check_test_split_ids
from reid.layout import query_gallery, split_train_test
from reid.matrices import DistanceMatrix

ROOT = Path(__file__).resolve().parents[1]

PLAYERS = (12, 4, 9)
FRAMES = 6  # frame 00 is the query, 01..05 the gallery


def _train_df(seed=0) -> pd.DataFrame:
    rows = []
    for player in PLAYERS:
        for frame in range(FRAMES):
            folder = "reid_test/query" if frame == 0 else "reid_test/gallery"
            rows.append(dict(img_id=f"{player}_3_{frame:02d}", folder=folder, player=player, game="test_3",
                             split="test", img_type="q" if frame == 0 else "g", fold=0))
    rows += [dict(img_id=f"77_1_{f:02d}", folder="reid_training", player=77, game="train_1", split="train",
                  img_type="q" if f == 0 else "g", fold=1) for f in range(FRAMES)]
    return pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)  # order must not matter


def _test_matrix(rng) -> DistanceMatrix:
    players = np.array(sorted(PLAYERS))
    gallery = np.repeat(players, FRAMES - 1)
    values = rng.random((len(players), len(gallery))).astype(np.float32) + 0.3 * (players[:, None] != gallery[None, :])
    return DistanceMatrix(values, players, gallery)


def _run(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "predict_fortestset.py"), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def _assert_scores_printed(stdout, values, query_players, gallery_players):
    """The printed mAP, mINP and CMC rank-1/5/10 (percent, two decimals) are the plain implementation's."""
    np.random.seed(12345)  # the script's cuhk03 draws come from RandomState(12345): the same stream
    ap, inp, curves = plain_scores(values, np.asarray(query_players), np.asarray(gallery_players),
                                   np.zeros(len(query_players), np.int64), np.ones(len(gallery_players), np.int64))
    rows = [line.split() for line in stdout.splitlines()]
    printed = {row[0]: [float(v) for v in row[1:] if v != "%"] for row in rows
               if row and row[0] in ("mAP", "mINP", *CMC_CONFIGS)}
    assert printed["mAP"] == pytest.approx([100 * ap], abs=0.0051)
    assert printed["mINP"] == pytest.approx([100 * inp], abs=0.0051)
    for name in CMC_CONFIGS:
        assert printed[name] == pytest.approx((100 * curves[name][[0, 4, 9]]).tolist(), abs=0.0051), name


def held_out_rows(train_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test split's query and gallery rows in evaluation order, as the script reads them (reid.layout)."""
    return query_gallery(split_train_test(train_df)[1])


def test_evaluation_order_from_train_df():
    query, gallery = held_out_rows(_train_df())
    np.testing.assert_array_equal(query["player"], [4, 9, 12])
    np.testing.assert_array_equal(gallery["player"], np.repeat([4, 9, 12], FRAMES - 1))


def test_scores_a_test_split_matrix(tmp_path):
    (tmp_path / "data" / "data_reid").mkdir(parents=True)
    _train_df().to_csv(tmp_path / "data" / "data_reid" / "train_df.csv", index=False)
    matrix = _test_matrix(np.random.default_rng(0))
    matrix.write_csv(tmp_path / "fused.csv")
    result = _run("--csv", tmp_path / "fused.csv", "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reread = DistanceMatrix.read_csv(tmp_path / "fused.csv", dtype=np.float32)
    _assert_scores_printed(result.stdout, reread.values, reread.query_ids, reread.gallery_ids)
    assert "3 queries x 15 gallery" in result.stdout


def test_reports_what_differs_from_the_test_split(tmp_path):
    (tmp_path / "data" / "data_reid").mkdir(parents=True)
    train_df = _train_df()
    train_df.to_csv(tmp_path / "data" / "data_reid" / "train_df.csv", index=False)
    matrix = _test_matrix(np.random.default_rng(1))
    dropped = DistanceMatrix(matrix.values[:, :-1], matrix.query_ids, matrix.gallery_ids[:-1])  # the published reader's defect
    problems = check_test_split_ids(dropped, *held_out_rows(train_df))
    assert problems == ["gallery ids: the CSV has 14, train_df's test split has 15"]
    other = DistanceMatrix(matrix.values, [4, 9, 13], matrix.gallery_ids)
    (problem,) = check_test_split_ids(other, *held_out_rows(train_df))
    assert "query position 2 (0-based): 13 vs 12" in problem and "only in the CSV: [13]" in problem
    other.write_csv(tmp_path / "other.csv")
    result = _run("--csv", tmp_path / "other.csv", "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode != 0 and "does not match the test split" in result.stderr and "13 vs 12" in result.stderr


def test_scores_a_challenge_matrix_against_the_truth(tmp_path):
    rng = np.random.default_rng(2)
    matrix = _test_matrix(rng)
    query_files = np.array([3, 17, 40])  # anonymous file numbers, ascending
    gallery_files = rng.permutation(np.arange(100, 100 + matrix.shape[1]))
    truth = pd.DataFrame({
        "img_id": np.concatenate([query_files, gallery_files]),
        "img_type": ["q"] * 3 + ["g"] * len(gallery_files),
        "player": np.concatenate([matrix.query_ids, matrix.gallery_ids]),
    }).sample(frac=1, random_state=0)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    DistanceMatrix(matrix.values, query_files, gallery_files).write_csv(tmp_path / "challenge.csv")
    result = _run("--csv", tmp_path / "challenge.csv", "--truth", tmp_path / "truth.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reread = DistanceMatrix.read_csv(tmp_path / "challenge.csv", dtype=np.float32)
    _assert_scores_printed(result.stdout, reread.values, matrix.query_ids, matrix.gallery_ids)
    DistanceMatrix(matrix.values[:, 1:], query_files, gallery_files[1:]).write_csv(tmp_path / "partial.csv")
    result = _run("--csv", tmp_path / "partial.csv", "--truth", tmp_path / "truth.csv", cwd=tmp_path)
    assert result.returncode != 0 and f"gallery images of the truth file are missing from the CSV, e.g. [{gallery_files[0]}]" in result.stderr


@pytest.mark.parametrize("seed", [0])
def test_reference_case_scores(reference_dir, tmp_path, seed):
    case = np.load(reference_dir / f"test_seed{seed}.npz")
    matrix = DistanceMatrix(case["dist_rerank_l07"], case["query_ids"], case["gallery_ids"])
    players = case["query_ids"]
    gallery_counts = np.bincount(np.searchsorted(players, case["gallery_ids"]), minlength=len(players))
    rows = [dict(img_id=f"{p}_0_00", folder="reid_test/query", player=p, game="test_0", split="test", img_type="q", fold=0) for p in players]
    rows += [dict(img_id=f"{p}_0_{f:02d}", folder="reid_test/gallery", player=p, game="test_0", split="test", img_type="g", fold=0)
             for p, count in zip(players, gallery_counts) for f in range(1, count + 1)]
    (tmp_path / "data_reid").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "data_reid" / "train_df.csv", index=False)
    matrix.write_csv(tmp_path / "m.csv")
    result = _run("--csv", tmp_path / "m.csv", "--data-dir", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"mAP   {100 * case['mAP_rerank_l07']:6.2f} %" in result.stdout
    top = case["cmc_top_1_5_10_market1501_rerank_l07"]
    assert "  market1501" + "".join(f"{100 * v:9.2f}" for v in top) in result.stdout
