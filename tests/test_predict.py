"""evaluate.py, predict.py and the my_py analysis scripts end to end on the small synthetic twin, on CPU.

The checkpoints are tiny random-init models (timm ``test_resnet`` at 48 x 24) saved as training saves
them: weights + training configuration. The expected ids are rebuilt here from the image files and
train_df.csv, independently of the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from plain_postprocess import plain_classic, plain_hard_weight, plain_scores

import evaluate
import predict
from reid.config import RerankSettings, parse
from reid.engine import save_checkpoint
from reid.features import FeatureSet
from reid.layout import split_frames
from reid.matrices import DistanceMatrix
from reid.models import build_model
from reid.prediction import choose_queries, model_names
from reid.retrieval.distance import squared_euclidean
from reid.scoring import distance_matrices, evaluate_features
from tests.reference_cases import distance_d

ROOT = Path(__file__).resolve().parents[1]
DISTANCES = ("raw", "classic", "hard")
TINY_MODEL = {"model": "test_resnet", "img_size": [48, 24], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
              "remove_proj": True, "fold": -1, "train_on_all": False, "k1": 20, "k2": 6, "lambda_value": 0.7,
              "flip_test": False}
FAST = {"num_workers": 0, "verbose": False, "device": "cpu", "batch_size": 64}


def load_script(relative: str):
    """A my_py script as a module (my_py is not a package)."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def twin(twin_data) -> Path:
    """The small synthetic twin with the CSVs of preprocess_data.py (drawn once per session); returns data_dir."""
    return twin_data


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    """Two tiny random-init checkpoints in two run folders, as training writes them."""
    root = tmp_path_factory.mktemp("model")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        encoder = build_model(TINY_MODEL)
        paths.append(save_checkpoint({"model": encoder.state_dict(), "config": TINY_MODEL | {"seed": seed}, "epoch": 3},
                                     root / f"run{seed}" / "best.pth"))
    return paths


@pytest.fixture(scope="module")
def predicted(twin, checkpoints, tmp_path_factory) -> Path:
    """predict.py on both checkpoints, both splits, every distance; returns output_dir."""
    output_dir = tmp_path_factory.mktemp("predictions")
    predict.main(predict.Configuration(checkpoint=checkpoints, data_dir=twin, output_dir=output_dir, **FAST))
    return output_dir


def plain_matrices(features: FeatureSet) -> dict[str, np.ndarray]:
    """The test split's three matrices by the plain implementations (README D, R1, R2), published settings."""
    query, gallery = features.query.features, features.gallery.features
    raw = distance_d(query, gallery)
    return {"raw": raw, "classic": plain_classic(raw, distance_d(query, query), distance_d(gallery, gallery), lambda_value=0.7),
            "hard": plain_hard_weight(query, gallery)}


def plain_split_scores(matrices: dict[str, np.ndarray], query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict[str, float]:
    """``<score>_<distance>`` of each matrix by the plain metrics (sklearn's AP; queries camera 0, gallery camera 1)."""
    cams = np.zeros(len(query_ids), np.int64), np.ones(len(gallery_ids), np.int64)
    scores = {}
    for name, dist in matrices.items():
        ap, inp, curves = plain_scores(dist, query_ids, gallery_ids, *cams, topk=10)
        top = curves["market1501"]
        scores |= {f"map_{name}": ap, f"minp_{name}": inp, f"rank1_{name}": top[0], f"rank5_{name}": top[4], f"rank10_{name}": top[9]}
    return scores


@pytest.fixture(scope="module")
def plain_expected(predicted) -> dict[str, dict[str, float]]:
    """{run1, run2, ensemble: plain scores} from the saved features, independently of the code under test."""
    features = {name: FeatureSet.load(predicted / name / "features_test.npz") for name in ("run1", "run2")}
    matrices = {name: plain_matrices(f) for name, f in features.items()}
    mean = {d: ((matrices["run1"][d].astype(np.float64) + matrices["run2"][d]) / 2).astype(np.float32) for d in DISTANCES}
    ids = features["run1"].query.player, features["run1"].gallery.player
    return {name: plain_split_scores(m, *ids) for name, m in (*matrices.items(), ("ensemble", mean))}


def expected_test_ids(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Test split in evaluation order from the file names: (query players, gallery players, query stems, gallery stems)."""
    out = []
    for folder in ("query", "gallery"):
        stems = [p.stem for p in (data_dir / "data_reid" / "reid_test" / folder).glob("*.jpeg")]
        stems.sort(key=lambda s: (int(s.split("_")[0]), int(s.split("_")[2])))
        out.append(stems)
    return (np.array([int(s.split("_")[0]) for s in out[0]]), np.array([int(s.split("_")[0]) for s in out[1]]), out[0], out[1])


def expected_challenge_ids(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.array(sorted(int(p.stem) for p in (data_dir / "data_reid" / "reid_challenge" / folder).glob("*.jpeg")))
                 for folder in ("query", "gallery"))


def test_predict_writes_features_and_submission_matrices_in_evaluation_order(twin, predicted):
    query_players, gallery_players, query_stems, gallery_stems = expected_test_ids(twin)
    challenge_query, challenge_gallery = expected_challenge_ids(twin)
    assert json.loads((predicted / "config.json").read_text())["splits"] == ["test", "challenge"]
    for name in ("run1", "run2"):
        for split, (query_ids, gallery_ids) in (("test", (query_players, gallery_players)),
                                                ("challenge", (challenge_query, challenge_gallery))):
            # features: queries then gallery, in evaluation order, L2-normalised float32
            features = FeatureSet.load(predicted / name / f"features_{split}.npz")
            assert features.split == split and features.checkpoint.endswith(f"{name}/best.pth")
            assert features.features.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(features.features, axis=1), 1.0, atol=1e-5)
            assert features.img_type.tolist() == ["q"] * len(query_ids) + ["g"] * len(gallery_ids)
            np.testing.assert_array_equal(features.query.player, query_ids)
            np.testing.assert_array_equal(features.gallery.player, gallery_ids)
            if split == "test":
                assert features.query.img_id.tolist() == query_stems and features.gallery.img_id.tolist() == gallery_stems
            else:
                assert features.gallery.img_id.tolist() == [str(n) for n in challenge_gallery]
            for distance in DISTANCES:
                path = predicted / name / f"{split}_{distance}.csv"
                lines = path.read_text().splitlines()
                # the submission format: header "0,<gallery ids>", then "<query id>,%10.5f,..."
                assert lines[0] == ",".join(["0", *map(str, gallery_ids)])
                assert len(lines) == 1 + len(query_ids)
                assert re.fullmatch(rf"{query_ids[0]}(,[ -]*\d+\.\d{{5}}){{{len(gallery_ids)}}}", lines[1])
                matrix = DistanceMatrix.read_csv(path)
                np.testing.assert_array_equal(matrix.query_ids, query_ids)
                np.testing.assert_array_equal(matrix.gallery_ids, gallery_ids)
            # raw = squared Euclidean between the saved query and gallery features (to the written precision)
            raw = DistanceMatrix.read_csv(predicted / name / f"{split}_raw.csv").values
            np.testing.assert_allclose(raw, squared_euclidean(features.query.features, features.gallery.features), atol=6e-6)
            hard = DistanceMatrix.read_csv(predicted / name / f"{split}_hard.csv").values
            assert np.abs(hard - raw).max() > 1e-3  # re-ranked, not a copy


def test_ensemble_is_the_mean_of_the_models_matrices(predicted):
    for split in ("test", "challenge"):
        for distance in DISTANCES:
            first, second = (DistanceMatrix.read_csv(predicted / name / f"{split}_{distance}.csv") for name in ("run1", "run2"))
            ensemble = DistanceMatrix.read_csv(predicted / "ensemble" / f"{split}_{distance}.csv")
            assert np.abs(first.values - second.values).max() > 1e-3  # two different models
            np.testing.assert_array_equal(ensemble.query_ids, first.query_ids)
            np.testing.assert_array_equal(ensemble.gallery_ids, first.gallery_ids)
            np.testing.assert_allclose(ensemble.values, (first.values + second.values) / 2, atol=1.1e-5)


def test_predict_scores_equal_the_plain_implementations(predicted, plain_expected):
    table = pd.read_csv(predicted / "scores.csv")
    assert table[["model", "distance"]].values.tolist() == [[m, d] for m in ("run1", "run2", "ensemble") for d in DISTANCES]
    for row in table.itertuples():
        expected = plain_expected[row.model]
        for score in ("map", "rank1", "rank5", "rank10", "minp"):
            assert getattr(row, score) == pytest.approx(expected[f"{score}_{row.distance}"], abs=1e-6), (row.model, row.distance, score)
        matrix = DistanceMatrix.read_csv(predicted / row.model / f"test_{row.distance}.csv")  # the saved matrix ranks alike
        cams = np.zeros(matrix.shape[0], np.int64), np.ones(matrix.shape[1], np.int64)
        assert row.map == pytest.approx(plain_scores(matrix.values, matrix.query_ids, matrix.gallery_ids, *cams)[0], abs=2e-3)


def test_distance_matrices_from_torch_tensors_equal_numpy(predicted):
    # the path predict.py and evaluate.py take on a GPU, here with CPU tensors
    features = FeatureSet.load(predicted / "run2" / "features_test.npz")
    query, gallery = features.query.features, features.gallery.features
    from_numpy = distance_matrices(query, gallery, DISTANCES)
    from_torch = distance_matrices(torch.from_numpy(query), torch.from_numpy(gallery), DISTANCES)
    for name in DISTANCES:
        assert isinstance(from_torch[name], np.ndarray) and from_torch[name].dtype == np.float32
        np.testing.assert_allclose(from_torch[name], from_numpy[name], atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="unknown distance"):
        distance_matrices(query, gallery, ("raw", "cosine"))


def test_predict_one_checkpoint_with_flip_and_chosen_outputs(twin, checkpoints, predicted, tmp_path):
    predict.main(predict.Configuration(checkpoint=checkpoints[:1], data_dir=twin, output_dir=tmp_path, splits=("test",),
                                       distances=("raw",), flip=True, names=["mine"], **FAST))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["features_test.npz", "test_raw.csv"]
    assert not (tmp_path / "ensemble").exists()
    flipped = FeatureSet.load(tmp_path / "mine" / "features_test.npz")
    plain = FeatureSet.load(predicted / "run1" / "features_test.npz")
    assert flipped.flip and not plain.flip
    np.testing.assert_allclose(np.linalg.norm(flipped.features, axis=1), 1.0, atol=1e-5)
    assert np.abs(flipped.features - plain.features).max() > 1e-3
    with pytest.raises(ValueError, match="one distinct name per checkpoint"):
        predict.main(predict.Configuration(checkpoint=checkpoints, data_dir=twin, output_dir=tmp_path, names=["a"], **FAST))
    with pytest.raises(FileNotFoundError, match=r"not found: .*typo\.pth"):
        predict.main(predict.Configuration(checkpoint=[checkpoints[0], tmp_path / "typo.pth"], data_dir=twin,
                                           output_dir=tmp_path / "never", **FAST))
    assert not (tmp_path / "never").exists()  # stopped before any work


def test_evaluate_scores_equal_the_training_evaluation_and_draw_a_rank_list(twin, checkpoints, predicted, plain_expected):
    scores = evaluate.main(evaluate.Configuration(checkpoint=checkpoints[0], data_dir=twin, ranklist_queries=4, **FAST))
    output_dir = checkpoints[0].parent / "evaluate_best"  # the default
    # the plain implementations' numbers on the same features
    assert scores == pytest.approx(plain_expected["run1"], abs=1e-6)
    # the same numbers as the per-epoch evaluation of training on the same features
    features = FeatureSet.load(predicted / "run1" / "features_test.npz")
    expected = evaluate_features(features.query.features, features.gallery.features, features.query.player,
                                 features.gallery.player, settings=RerankSettings(k1=20, k2=6, lambda_value=0.7)).scores
    assert scores == pytest.approx(expected, abs=1e-12)
    table = pd.read_csv(output_dir / "scores.csv")
    assert table["distance"].tolist() == list(DISTANCES)
    assert table.loc[0, "map"] == pytest.approx(expected["map_raw"]) and table.loc[2, "minp"] == pytest.approx(expected["minp_hard"])
    summary = json.loads((output_dir / "scores.json").read_text())
    assert summary["epoch"] == 3 and summary["split"] == "test" and summary["num_query"] == 10
    assert summary["scores"]["rank1_classic"] == pytest.approx(expected["rank1_classic"])
    with Image.open(output_dir / "ranklist.png") as picture:  # 4 rows of 11 crops
        assert picture.format == "PNG" and picture.width > 700 and picture.height > 4 * 150


def test_evaluate_raw_only_and_option_errors(twin, checkpoints, tmp_path):
    scores = evaluate.main(evaluate.Configuration(checkpoint=checkpoints[1], data_dir=twin, output_dir=tmp_path, rerank=False,
                                                  ranklist_queries=0, split="fold0", **FAST))
    assert pd.read_csv(tmp_path / "scores.csv")["distance"].tolist() == ["raw"]
    assert not (tmp_path / "ranklist.png").exists()
    fold_queries, _ = split_frames(twin, "fold0")
    assert json.loads((tmp_path / "scores.json").read_text())["num_query"] == len(fold_queries)
    assert 0.0 <= scores["map_raw"] <= 1.0
    with pytest.raises(ValueError, match="needs --rerank"):
        evaluate.main(evaluate.Configuration(checkpoint=checkpoints[1], data_dir=twin, output_dir=tmp_path, rerank=False,
                                             ranklist_distance="hard", **FAST))
    with pytest.raises(ValueError, match="no identities"):
        evaluate.main(evaluate.Configuration(checkpoint=checkpoints[1], data_dir=twin, split="challenge", **FAST))
    not_a_checkpoint = tmp_path / "weights.pth"
    torch.save({"weights": torch.zeros(1)}, not_a_checkpoint)
    with pytest.raises(ValueError, match=rf"^{not_a_checkpoint}: not a training checkpoint"):  # the path is named
        evaluate.main(evaluate.Configuration(checkpoint=not_a_checkpoint, data_dir=twin, output_dir=tmp_path, **FAST))


def as_published(checkpoint: Path, path: Path) -> Path:
    """The weights of one of our checkpoints in the published layout: weights_e<n>.pth, a plain state dict
    of the TimmModel wrapper (timm keys under model., plus model.logit_scale)."""
    weights = torch.load(checkpoint, weights_only=True)["model"]
    state = {f"model.{key[len('backbone.'):]}": value for key, value in weights.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state | {"model.logit_scale": torch.tensor(2.6593)}, path)
    return path


def test_predict_and_fusion_on_published_checkpoints(twin, checkpoints, predicted, tmp_path):
    published = [as_published(checkpoint, tmp_path / f"seed{i}" / "weights_e4.pth") for i, checkpoint in enumerate(checkpoints, 1)]
    output = tmp_path / "out"
    # --model names the architecture; the normalisation of our tiny checkpoints is given (published default: ImageNet)
    predict.main(parse(predict.Configuration, [
        "--checkpoint", *map(str, published), "--model", "test_resnet", "--img-size", "48", "24",
        "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5", "--data-dir", str(twin), "--output-dir", str(output),
        "--splits", "test", "--distances", "raw", "hard", "--num-workers", "0", "--no-verbose", "--device", "cpu"]))
    for name, ours in (("seed1", "run1"), ("seed2", "run2")):  # the same weights give the same features
        np.testing.assert_allclose(FeatureSet.load(output / name / "features_test.npz").features,
                                   FeatureSet.load(predicted / ours / "features_test.npz").features, atol=1e-6)
    assert (output / "ensemble" / "test_hard.csv").is_file()
    dissim_fuse = load_script("my_py/dissim_fuse.py")
    dissim_fuse.main(dissim_fuse.Configuration(inputs=[output / "seed1" / "test_hard.csv", output / "seed2" / "test_hard.csv"],
                                               output=tmp_path / "fused.csv"))
    fused = DistanceMatrix.read_csv(tmp_path / "fused.csv")
    np.testing.assert_array_equal(fused.query_ids, expected_test_ids(twin)[0])

    # without --mean / --std: the published scripts' ImageNet normalisation for timm models
    scores = evaluate.main(evaluate.Configuration(checkpoint=published[0], model="test_resnet", img_size=(48, 24),
                                                  data_dir=twin, output_dir=tmp_path / "eval", ranklist_queries=0, **FAST))
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["model"] == "test_resnet"
    assert 0.0 <= scores["map_hard"] <= 1.0
    with pytest.raises(ValueError, match="published code .* pass --model"):
        evaluate.main(evaluate.Configuration(checkpoint=published[0], data_dir=twin, output_dir=tmp_path / "eval", **FAST))
    with pytest.raises(ValueError, match="does not fit test_vit"):
        predict.main(predict.Configuration(checkpoint=published[:1], model=["test_vit"], data_dir=twin,
                                           output_dir=tmp_path / "never", **FAST))


def test_name_scripts_list_the_rows_and_columns_of_saved_matrices(twin, predicted, tmp_path):
    query_players, gallery_players, query_stems, gallery_stems = expected_test_ids(twin)
    name_test = load_script("my_py/name_test.py")
    query_csv, gallery_csv = name_test.main(name_test.Configuration(data_dir=twin, output_dir=tmp_path,
                                                                    matrix=predicted / "run1" / "test_hard.csv"))
    query, gallery = pd.read_csv(query_csv, dtype={"img_id": str}), pd.read_csv(gallery_csv, dtype={"img_id": str})
    assert query["img_id"].tolist() == query_stems and gallery["img_id"].tolist() == gallery_stems
    np.testing.assert_array_equal(query["id"], query_players)
    assert query["index"].tolist() == list(range(len(query_stems)))
    assert all((twin / path).is_file() for path in gallery["path"])

    name_challenge = load_script("my_py/name_challenge.py")
    query_csv, gallery_csv = name_challenge.main(name_challenge.Configuration(
        data_dir=twin, output_dir=tmp_path, matrix=predicted / "ensemble" / "challenge_raw.csv"))
    challenge_query, challenge_gallery = expected_challenge_ids(twin)
    np.testing.assert_array_equal(pd.read_csv(query_csv)["id"], challenge_query)
    np.testing.assert_array_equal(pd.read_csv(gallery_csv)["id"], challenge_gallery)
    with pytest.raises(ValueError, match=r"test_raw\.csv is not a matrix of the challenge split.*"
                                         r"query ids: the matrix has 10, the challenge split has 12"):
        name_challenge.main(name_challenge.Configuration(data_dir=twin, output_dir=tmp_path,
                                                         matrix=predicted / "run1" / "test_raw.csv"))
    saved = DistanceMatrix.read_csv(predicted / "run1" / "test_raw.csv")
    reordered = DistanceMatrix(saved.values[:, ::-1], saved.query_ids, saved.gallery_ids[::-1]).write_csv(tmp_path / "reordered.csv")
    with pytest.raises(ValueError, match=rf"gallery position 0 \(0-based\): {gallery_players[-1]} vs .*{gallery_stems[0]}"):
        name_test.main(name_test.Configuration(data_dir=twin, output_dir=tmp_path, matrix=reordered))


def test_feature_scripts_on_saved_features(predicted, tmp_path):
    plot_fea = load_script("my_py/plot_fea.py")
    picture = plot_fea.main(plot_fea.Configuration(features=predicted / "run1" / "features_test.npz",
                                                   output=tmp_path / "tsne.png", max_players=6))
    with Image.open(picture) as image:
        assert image.format == "PNG"
    challenge = plot_fea.main(plot_fea.Configuration(features=predicted / "run1" / "features_challenge.npz", images="query"))
    assert challenge == predicted / "run1" / "features_challenge_tsne_query.png" and challenge.is_file()

    cal_feadist = load_script("my_py/cal_feadist.py")
    features = FeatureSet.load(predicted / "run1" / "features_test.npz")
    table = cal_feadist.main(cal_feadist.Configuration(features=predicted / "run1" / "features_test.npz",
                                                       output_dir=tmp_path, pairs="query-gallery"))
    same = features.query.player[:, None] == features.gallery.player[None, :]
    dist = squared_euclidean(features.query.features, features.gallery.features)
    assert table.set_index("pairs").loc["intra", "count"] == same.sum()
    assert table.set_index("pairs").loc["inter", "mean"] == pytest.approx(dist[~same].mean(), abs=1e-6)
    stem = "features_test_query-gallery_feadist"
    assert pd.read_csv(tmp_path / f"{stem}.csv")["pairs"].tolist() == ["intra", "inter"]
    summary = json.loads((tmp_path / f"{stem}.json").read_text())
    assert 0.0 <= summary["auc"] <= 1.0 and summary["config"]["pairs"] == "query-gallery"
    assert (tmp_path / f"{stem}.png").is_file()
    with pytest.raises(ValueError, match="anonymous"):
        cal_feadist.main(cal_feadist.Configuration(features=predicted / "run1" / "features_challenge.npz"))


def test_choose_queries():
    ap = np.array([0.9, np.nan, 0.2, 0.5, 0.1, 1.0])
    assert choose_queries(np.zeros(7), 3, "spread").tolist() == [0, 3, 6]
    assert choose_queries(ap, 3, "hardest").tolist() == [4, 2, 3]
    assert choose_queries(ap, 10, "spread").tolist() == list(range(6))
    with pytest.raises(ValueError, match="spread or hardest"):
        choose_queries(ap, 2, "best")


def test_model_names_are_short_and_distinct():
    names = model_names(["model/a/best.pth", "model/a/last.pth", "model/b/best.pth", "c.pth", "x/c.pth", "y/c.pth", "y/c.pth"])
    assert names[:4] == ["a_best", "a_last", "b", "c"]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("script, flags", [
    ("evaluate.py", ["--checkpoint", "--ranklist-choice", "--flip"]),
    ("predict.py", ["--checkpoint", "--output-dir", "--distances", "--flip", "--ensemble"]),
    ("my_py/plot_fea.py", ["--features", "--perplexity"]),
    ("my_py/cal_feadist.py", ["--features", "--pairs"]),
    ("my_py/name_test.py", ["--data-dir", "--matrix"]),
    ("my_py/name_challenge.py", ["--data-dir", "--matrix"]),
])
def test_scripts_help(script, flags, capsys, monkeypatch):
    module = evaluate if script == "evaluate.py" else predict if script == "predict.py" else load_script(script)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stop:
        parse(module.Configuration, ["--help"], description=module.__doc__)
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out, flag
    assert module.__doc__.splitlines()[0] in " ".join(out.split())  # the docstring heads the help


def test_a_my_py_script_runs_from_another_folder(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "my_py" / "cal_feadist.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--features" in result.stdout
