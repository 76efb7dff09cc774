"""Every stage script, run as a user runs it, on the faults a user meets: one or two lines, the file, the status.

Bad input (a missing or foreign file, a bad flag value) exits 2, a failure during the work exits 1,
and neither prints a traceback. All cases run in one Python process (tests/script_cases.py), on a
tiny data folder made here: 8 training players, 3 test players, a few challenge images.
"""

from __future__ import annotations

import os
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from script_cases import assert_error, case, run_cases

from reid.catalog import challenge_frame, training_frame
from reid.engine import save_checkpoint
from reid.matrices import DistanceMatrix
from reid.models import build_model

TINY = {"model": "test_resnet", "img_size": [32, 16], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
        "remove_proj": True, "fold": -1, "train_on_all": False, "k1": 20, "k2": 6, "lambda_value": 0.7, "flip_test": False}
RUN = ["--device", "cpu", "--num-workers", "0", "--no-verbose"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def make_data(data_dir: Path) -> Path:
    """Tiny SynergyReID folders with real JPEGs and the two tables; returns data_dir."""
    rng = np.random.default_rng(0)
    data_reid = data_dir / "data_reid"
    names = [f"reid_training/{p}_{p // 4}_{f:02d}" for p in range(8) for f in range(3)]
    names += [f"reid_test/query/{p}_5_00" for p in (20, 21, 22)]
    names += [f"reid_test/gallery/{p}_5_{f:02d}" for p in (20, 21, 22) for f in (1, 2)]
    names += [f"reid_challenge/query/{n}" for n in (0, 1)] + [f"reid_challenge/gallery/{n}" for n in range(4)]
    for name in names:
        path = data_reid / f"{name}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 12, 3), dtype=np.uint8)).save(path)
    training_frame(data_reid, n_folds=2).to_csv(data_reid / "train_df.csv", index=False)
    challenge_frame(data_reid).to_csv(data_reid / "challenge_df.csv", index=False)
    return data_dir


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case once; returns {case name: Result} and the paths the assertions name."""
    root = tmp_path_factory.mktemp("faults")
    data = make_data(root / "data")
    broken = root / "broken"
    shutil.copytree(data, broken)
    bad_image = broken / "data_reid" / "reid_test" / "gallery" / "21_5_01.jpeg"
    bad_image.write_bytes(bad_image.read_bytes()[:150])  # truncated
    empty_image = broken / "data_reid" / "reid_challenge" / "gallery" / "2.jpeg"
    empty_image.write_bytes(b"")
    files = root / "files"
    files.mkdir()

    torch.manual_seed(0)
    good = save_checkpoint({"model": build_model(TINY).state_dict(), "config": TINY, "epoch": 1}, files / "good.pth")
    vit = build_model({"model": "test_vit", "img_size": 32}).state_dict()
    save_checkpoint({"model": vit, "config": TINY, "epoch": 1}, files / "other_architecture.pth")
    save_checkpoint({"model": build_model(TINY).state_dict(), "config": TINY | {"model": "test_resnet_typo"}},
                    files / "unknown_model.pth")
    save_checkpoint({"weights": torch.zeros(2)}, files / "no_layout.pth")
    torch.save(torch.zeros(3), files / "tensor.pth")
    torch.save({"x": Evil()}, files / "evil.pth")
    (files / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (files / "text.pth").write_text("model weights: see the README\n")
    (files / "text.npz").write_text("not numpy\n")
    (files / "text.zip").write_text("<html>rate limited</html>\n")
    (files / "not_gzip.csv.gz").write_bytes(b"\x00\x01binary\xff")
    with zipfile.ZipFile(files / "other.zip", "w") as other:
        other.writestr("README.md", "some other project")
    np.savez(files / "features.npz", features=np.zeros((2, 4), np.float32))
    features = (files / "features.npz").read_bytes()
    (files / "truncated.npz").write_bytes(features[: len(features) // 2])
    (files / "truth_columns.csv").write_text("image,kind,person\n1,q,3\n")
    (files / "truth_binary.csv").write_bytes(bytes(range(256)) * 4)
    (files / "truth_repeated.csv").write_text("img_id,player\n20_5_00,20\n20_5_00,21\n")
    matrix = files / "test.csv"
    matrix.write_text("0,20,20,21,21,22,22\n" + "".join(f"{q},{','.join(['   0.50000'] * 6)}\n" for q in (20, 21, 22)))
    gallery = [5, 5, 6]
    good_csv = DistanceMatrix(np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]), [1, 2], gallery).write_csv(files / "good.csv")
    for name in ("nan", "inf"):
        values = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
        values[1, 2] = float(name)
        DistanceMatrix(values, [1, 2], gallery).write_csv(files / f"{name}.csv")
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    nowhere = root / "nowhere"
    tiny_run = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "16", "--batch-size", "4", "--epochs", "1",
                "--model-path", root / "model", *RUN]
    cases = {
        "download: missing archive": case("download_data.py", "--archive", files / "absent.zip", "--data-dir", root / "d1"),
        "download: text as archive": case("download_data.py", "--archive", files / "text.zip", "--data-dir", root / "d2"),
        "download: other zip": case("download_data.py", "--archive", files / "other.zip", "--data-dir", root / "d3"),
        "download: offline": case("download_data.py", "--url", f"http://127.0.0.1:{closed_port}/master.zip", "--retries", 0,
                                  "--timeout", 2, "--data-dir", root / "d4"),
        "preprocess: no data": case("preprocess_data.py", "--data-dir", nowhere),
        "preprocess: unreadable images": case("preprocess_data.py", "--data-dir", broken, "--n-folds", 2, "--verify-images",
                                              "--workers", 2),
        "train: no tables": case("train_our_post.py", *tiny_run, "--data-dir", nowhere, "--run-name", "a"),
        "train: unknown model": case("train_our_post.py", *tiny_run, "--data-dir", data, "--model", "resnet5", "--run-name", "b"),
        "train: unreadable image": case("train_our_post.py", *tiny_run, "--data-dir", broken, "--run-name", "c"),
        "train: text file resumed": case("train_our_post.py", "--resume", files / "text.pth"),
        "train resnet: no tables": case("train_our_post_resnet.py", *tiny_run, "--data-dir", nowhere, "--run-name", "d"),
        "evaluate: missing checkpoint": case("evaluate.py", "--checkpoint", files / "absent.pth", "--data-dir", data, *RUN),
        "evaluate: text checkpoint": case("evaluate.py", "--checkpoint", files / "text.pth", "--data-dir", data, *RUN),
        "evaluate: truncated checkpoint": case("evaluate.py", "--checkpoint", files / "truncated.pth", "--data-dir", data, *RUN),
        "evaluate: no known layout": case("evaluate.py", "--checkpoint", files / "no_layout.pth", "--data-dir", data, *RUN),
        "evaluate: other architecture": case("evaluate.py", "--checkpoint", files / "other_architecture.pth", "--data-dir", data, *RUN),
        "evaluate: unknown model": case("evaluate.py", "--checkpoint", files / "unknown_model.pth", "--data-dir", data, *RUN),
        "evaluate: refused pickle": case("evaluate.py", "--checkpoint", files / "evil.pth", "--data-dir", data, *RUN),
        "evaluate: unknown fold": case("evaluate.py", "--checkpoint", good, "--data-dir", data, "--split", "fold7", *RUN),
        "evaluate: unreadable image": case("evaluate.py", "--checkpoint", good, "--data-dir", broken, "--output-dir", root / "e", *RUN),
        "predict: text checkpoint": case("predict.py", "--checkpoint", files / "text.pth", "--data-dir", data, *RUN),
        "predict: a tensor file": case("predict.py", "--checkpoint", files / "tensor.pth", "--data-dir", data, *RUN),
        "predict: unreadable image in a worker": case("predict.py", "--checkpoint", good, "--data-dir", broken, "--output-dir",
                                                      root / "p", "--device", "cpu", "--num-workers", "1", "--no-verbose"),
        "fortestset: missing csv": case("predict_fortestset.py", "--csv", files / "absent.csv", "--data-dir", data),
        "fortestset: no tables": case("predict_fortestset.py", "--csv", matrix, "--data-dir", nowhere),
        "fortestset: not gzip": case("predict_fortestset.py", "--csv", files / "not_gzip.csv.gz", "--data-dir", data),
        "fortestset: truth columns": case("predict_fortestset.py", "--csv", matrix, "--truth", files / "truth_columns.csv"),
        "fortestset: truth binary": case("predict_fortestset.py", "--csv", matrix, "--truth", files / "truth_binary.csv"),
        "plot_fea: missing features": case("my_py/plot_fea.py", "--features", files / "absent.npz"),
        "plot_fea: text features": case("my_py/plot_fea.py", "--features", files / "text.npz"),
        "cal_feadist: truncated features": case("my_py/cal_feadist.py", "--features", files / "truncated.npz"),
        "cal_feadist: foreign features": case("my_py/cal_feadist.py", "--features", files / "features.npz"),
        "name_test: no tables": case("my_py/name_test.py", "--data-dir", nowhere, "--output-dir", root / "n"),
        "name_challenge: text matrix": case("my_py/name_challenge.py", "--data-dir", data, "--matrix", files / "text.pth",
                                            "--output-dir", root / "n"),
        "sim_fuse: missing input": case("my_py/sim_fuse.py", "--inputs", matrix, files / "absent.csv", "--output", root / "f.csv"),
        "export: missing checkpoint": case("export.py", "--checkpoint", files / "absent.pth", "--output", root / "x.onnx"),
        "export: text checkpoint": case("export.py", "--checkpoint", files / "text.pth", "--output", root / "x.onnx"),
        "export: not .onnx": case("export.py", "--checkpoint", good, "--output", root / "x.json"),
        "search: empty folder": case("search.py", "--checkpoint", good, "--query", files, "--gallery", files, *RUN),
        "search: missing query": case("search.py", "--checkpoint", good, "--query", nowhere, "--gallery", data, *RUN),
        "search: unreadable crop": case("search.py", "--checkpoint", good, "--query", bad_image, "--gallery",
                                        data / "data_reid" / "reid_test" / "gallery", "--output-dir", root / "s", *RUN),
        "cluster: no training split": case("cluster.py", "--checkpoint", good, "--images", data / "data_reid" / "reid_test",
                                           "--data-dir", nowhere, "--output-dir", root / "c", *RUN),
        "cluster: truth columns": case("cluster.py", "--checkpoint", good, "--images", data / "data_reid" / "reid_test",
                                       "--truth", files / "truth_columns.csv", "--output-dir", root / "c", *RUN),
        "cluster: truth binary": case("cluster.py", "--checkpoint", good, "--images", data / "data_reid" / "reid_test",
                                      "--truth", files / "truth_binary.csv", "--output-dir", root / "c", *RUN),
        "cluster: truth repeated": case("cluster.py", "--checkpoint", good, "--images", data / "data_reid" / "reid_test",
                                        "--truth", files / "truth_repeated.csv", "--output-dir", root / "c", *RUN),
    }
    out = root / "out.csv"
    for script in ("my_py/sim_fuse.py", "my_py/dissim_fuse.py"):
        cases |= {
            f"{script}: nan": case(script, "--inputs", good_csv, files / "nan.csv", "--output", out),
            f"{script}: inf": case(script, "--inputs", files / "inf.csv", good_csv, "--output", out),
            f"{script}: output is an input": case(script, "--inputs", good_csv, files / "nan.csv", "--output", good_csv),
            f"{script}: output is an input by another path": case(script, "--inputs", good_csv, good_csv, "--output",
                                                                  Path(".") / "good.csv", cwd=files),
        }
    cases |= {
        "dissim_fuse: topk 0": case("my_py/dissim_fuse.py", "--inputs", good_csv, good_csv, "--topk", 0, "--output", out),
        "dissim_fuse: topk -3": case("my_py/dissim_fuse.py", "--inputs", good_csv, good_csv, "--topk", -3, "--output", out),
        "sim_fuse: weights": case("my_py/sim_fuse.py", "--inputs", good_csv, good_csv, "--weights", 1, "--output", out),
        "fortestset: nan": case("predict_fortestset.py", "--csv", files / "nan.csv", "--data-dir", data),
        "fortestset: inf": case("predict_fortestset.py", "--csv", files / "inf.csv", "--data-dir", data),
    }
    tables_written = (broken / "data_reid" / "train_df.csv").stat().st_mtime_ns
    good_bytes = good_csv.read_bytes()
    ran = run_cases(list(cases.values()), root)
    paths = {"files": files, "data": data, "nowhere": nowhere, "bad_image": bad_image, "empty_image": empty_image,
             "matrix": matrix, "out": out, "good_csv": good_csv, "good_bytes": good_bytes,
             "tables_rewritten": (broken / "data_reid" / "train_df.csv").stat().st_mtime_ns != tables_written}
    return dict(zip(cases, ran)), paths


def test_download_and_preprocess(results):
    ran, paths = results
    files = paths["files"]
    assert_error(ran["download: missing archive"], 2, f"--archive {files / 'absent.zip'}: no such file")
    assert_error(ran["download: text as archive"], 2, f"{files / 'text.zip'} is not a zip file")
    assert_error(ran["download: other zip"], 2, f"{files / 'other.zip'} is neither the challenge toolkit archive")
    assert_error(ran["download: offline"], 1, "could not connect", "--archive")
    assert_error(ran["preprocess: no data"], 2, f"{paths['nowhere'] / 'data_reid' / 'reid_training'}: folder not found")
    # --verify-images lists every unreadable or empty image, and writes no table
    result = ran["preprocess: unreadable images"]
    assert_error(result, 2, max_lines=3)
    lines = result.stderr[result.stderr.index("error: "):].strip().splitlines()  # after the progress bar
    assert lines[0] == "error: 2 of 39 images cannot be read; replace or remove them, then run preprocess_data.py again:"
    assert lines[1].startswith(f"  {paths['bad_image']}: ") and lines[2] == f"  {paths['empty_image']}: empty file (0 bytes)"
    assert not paths["tables_rewritten"]


def test_training_scripts(results):
    ran, paths = results
    assert_error(ran["train: no tables"], 2, f"{paths['nowhere'] / 'data_reid' / 'train_df.csv'} not found")
    assert_error(ran["train resnet: no tables"], 2, f"{paths['nowhere'] / 'data_reid' / 'train_df.csv'} not found")
    assert_error(ran["train: unknown model"], 2, "unknown model 'resnet5'", "resnet50")
    assert_error(ran["train: unreadable image"], 1, f"cannot decode image {paths['bad_image']}", max_lines=1)
    assert_error(ran["train: text file resumed"], 2, f"{paths['files'] / 'text.pth'}: not a readable checkpoint")


def test_evaluate(results):
    ran, paths = results
    files = paths["files"]
    assert_error(ran["evaluate: missing checkpoint"], 2, f"checkpoint not found: {files / 'absent.pth'}")
    assert_error(ran["evaluate: text checkpoint"], 2, f"{files / 'text.pth'}: not a readable checkpoint (not a PyTorch checkpoint")
    assert_error(ran["evaluate: truncated checkpoint"], 2, f"{files / 'truncated.pth'}: not a readable checkpoint (an incomplete zip")
    assert_error(ran["evaluate: refused pickle"], 2, f"{files / 'evil.pth'}: not a readable checkpoint", "could run code")
    assert "this must never run" not in ran["evaluate: refused pickle"].stdout
    assert_error(ran["evaluate: no known layout"], 2, f"{files / 'no_layout.pth'}: not a training checkpoint")
    assert_error(ran["evaluate: other architecture"], 2, f"{files / 'other_architecture.pth'} does not fit test_resnet (missing: ")
    assert_error(ran["evaluate: unknown model"], 2, f"{files / 'unknown_model.pth'}:", "unknown model 'test_resnet_typo'")
    assert_error(ran["evaluate: unknown fold"], 2, "fold 7 does not exist")
    assert_error(ran["evaluate: unreadable image"], 1, f"cannot decode image {paths['bad_image']}", max_lines=1)


def test_predict(results):
    ran, paths = results
    files = paths["files"]
    assert_error(ran["predict: text checkpoint"], 2, f"{files / 'text.pth'}: not a readable checkpoint")
    assert_error(ran["predict: a tensor file"], 2, f"{files / 'tensor.pth'}: a PyTorch file holding a Tensor, not a checkpoint")
    # read in a DataLoader worker process: the worker's traceback is not shown
    assert_error(ran["predict: unreadable image in a worker"], 1, f"cannot decode image {paths['bad_image']}", max_lines=1)


def test_predict_fortestset(results):
    ran, paths = results
    files = paths["files"]
    assert_error(ran["fortestset: missing csv"], 2, f"{files / 'absent.csv'}: No such file or directory")
    assert_error(ran["fortestset: no tables"], 2, f"{paths['nowhere'] / 'data_reid' / 'train_df.csv'} not found", "preprocess_data.py")
    assert_error(ran["fortestset: not gzip"], 2, f"{files / 'not_gzip.csv.gz'}: line 1: expected the header")
    assert_error(ran["fortestset: truth columns"], 2, f"--truth {files / 'truth_columns.csv'}: missing column(s) img_id, img_type, player")
    assert_error(ran["fortestset: truth binary"], 2, f"--truth {files / 'truth_binary.csv'}:")


def test_analysis_and_fusion_scripts(results):
    ran, paths = results
    files = paths["files"]
    assert_error(ran["plot_fea: missing features"], 2, f"features file not found: {files / 'absent.npz'}")
    assert_error(ran["plot_fea: text features"], 2, f"{files / 'text.npz'}: not an .npz file")
    assert_error(ran["cal_feadist: truncated features"], 2, f"{files / 'truncated.npz'}:")
    assert_error(ran["cal_feadist: foreign features"], 2, f"{files / 'features.npz'}: missing key(s)")
    assert_error(ran["name_test: no tables"], 2, f"{paths['nowhere'] / 'data_reid' / 'train_df.csv'} not found")
    assert_error(ran["name_challenge: text matrix"], 2, f"{files / 'text.pth'}: line 1")
    assert_error(ran["sim_fuse: missing input"], 2, f"{files / 'absent.csv'}: No such file or directory")


def test_non_finite_cells_bad_fusion_flags_and_an_output_over_an_input_are_refused(results):
    ran, paths = results
    files, good = paths["files"], paths["good_csv"]
    for script in ("my_py/sim_fuse.py", "my_py/dissim_fuse.py"):
        assert_error(ran[f"{script}: nan"], 2, f"{files / 'nan.csv'}: line 3, column 4: the distance is 'nan', not a finite number")
        assert_error(ran[f"{script}: inf"], 2, f"{files / 'inf.csv'}: line 3, column 4: the distance is 'inf', not a finite number")
        assert_error(ran[f"{script}: output is an input"], 2, f"--output {good} is also an input ({good})")
        assert_error(ran[f"{script}: output is an input by another path"], 2, "--output good.csv is also an input")
    assert_error(ran["dissim_fuse: topk 0"], 2, "--topk 0: must be at least 1")
    assert_error(ran["dissim_fuse: topk -3"], 2, "--topk -3: must be at least 1")
    assert_error(ran["sim_fuse: weights"], 2, "--weights: 1 values for 2 --inputs")
    assert_error(ran["fortestset: nan"], 2, f"{files / 'nan.csv'}: line 3, column 4: the distance is 'nan'")
    assert_error(ran["fortestset: inf"], 2, f"{files / 'inf.csv'}: line 3, column 4: the distance is 'inf'")
    assert not paths["out"].exists()
    assert good.read_bytes() == paths["good_bytes"]


def test_using_a_model_elsewhere(results):
    ran, paths = results
    files = paths["files"]
    assert_error(ran["export: missing checkpoint"], 2, f"checkpoint not found: {files / 'absent.pth'}")
    assert_error(ran["export: text checkpoint"], 2, f"{files / 'text.pth'}: not a readable checkpoint")
    assert_error(ran["export: not .onnx"], 2, "must end in .onnx")
    assert_error(ran["search: empty folder"], 2, f"{files}: no images in this folder or its subfolders")
    assert_error(ran["search: missing query"], 2, f"{paths['nowhere']}: no such file or folder")
    assert_error(ran["search: unreadable crop"], 1, f"cannot decode image {paths['bad_image']}", max_lines=1)
    assert_error(ran["cluster: no training split"], 2, f"{paths['nowhere'] / 'data_reid' / 'train_df.csv'} not found",
                 "--threshold")
    assert_error(ran["cluster: truth columns"], 2, f"--truth {files / 'truth_columns.csv'}: needs the columns img_id and player")
    assert_error(ran["cluster: truth binary"], 2, f"--truth {files / 'truth_binary.csv'}: not a readable CSV table")
    assert_error(ran["cluster: truth repeated"], 2, f"--truth {files / 'truth_repeated.csv'}: img_id 20_5_00 has several rows")


def test_ctrl_c_during_training_is_one_line_naming_the_checkpoint_to_resume(results, tmp_path):
    """A real SIGINT to ``python train_our_post.py`` after its first saved epoch: status 130, no traceback."""
    import signal
    import subprocess
    import sys
    import threading

    _, paths = results
    command = [sys.executable, "train_our_post.py", "--model", "test_resnet", "--no-pretrained", "--img-size", "32", "16",
               "--batch-size", "4", "--epochs", "1000", "--data-dir", paths["data"], "--model-path", tmp_path / "model",
               "--run-name", "cut", *RUN]
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with (tmp_path / "stderr.txt").open("w+") as stderr, subprocess.Popen(
            [str(part) for part in command], cwd=root, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True) as process:
        watchdog = threading.Timer(240, process.kill)  # a run that never saves ends the loop below, and fails
        watchdog.start()
        try:
            for line in process.stdout:
                if line.startswith("saved "):  # epoch 1 is on disk
                    process.send_signal(signal.SIGINT)
                    break
            process.wait(timeout=120)
        finally:
            watchdog.cancel()
            process.kill()
        stderr.seek(0)
        errors = stderr.read()
    last = tmp_path / "model" / "cut" / "last.pth"
    assert process.returncode == 130, errors
    assert "Traceback" not in errors
    lines = errors.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: epoch ") and lines[0].endswith(f"go on with --resume {last}")
    assert torch.load(last, weights_only=False, map_location="cpu")["epoch"] >= 1
