"""Whole training runs on the small synthetic twin with tiny models, on CPU.

Runs: a 2-epoch run that learns (its folder is reused by the NaN and resume-parsing tests), an
interrupted-and-resumed run against an uninterrupted one, a 2-process torchrun (gloo) run.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_models import one_thread  # noqa: F401  (autouse)

import reid.training as training
from reid.catalog import training_frame
from reid.engine import NonFiniteLossError, load_checkpoint, load_encoder, save_checkpoint
from reid.synthetic import generate_twin
from reid.training import parse_training_config, run
from train_our_post import Configuration

REPO = Path(__file__).resolve().parents[1]
# test_resnet (0.4 M parameters) at 48 x 24 learns the twin's kits within an epoch from random init.
TINY = dict(model="test_resnet", pretrained=False, img_size=(48, 24), batch_size=32, lr=2e-3, warmup_epochs=0.0,
            scheduler="constant", device="cpu", num_workers=0, verbose=False)
TINY_FLAGS = ["--model", "test_resnet", "--no-pretrained", "--img-size", "24", "12", "--batch-size", "8", "--lr", "2e-3",
              "--warmup-epochs", "0", "--scheduler", "constant", "--device", "cpu", "--num-workers", "0", "--no-verbose"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """The small synthetic twin with its train_df.csv; returns data_dir."""
    data_dir = tmp_path_factory.mktemp("twin")
    data_reid = generate_twin(data_dir, "small", seed=0, workers=2, progress=False)
    training_frame(data_reid).to_csv(data_reid / "train_df.csv", index=False)
    return data_dir


@pytest.fixture(scope="module")
def small_twin(twin, tmp_path_factory) -> Path:
    """The twin's images with a train_df.csv of its first 24 training players only (faster epochs)."""
    data_dir = tmp_path_factory.mktemp("small_twin")
    (data_dir / "data_reid").mkdir()
    for folder in ("reid_training", "reid_test"):
        (data_dir / "data_reid" / folder).symlink_to(twin / "data_reid" / folder)
    frame = pd.read_csv(twin / "data_reid" / "train_df.csv")
    kept = sorted(frame.loc[frame["split"] == "train", "player"].unique())[:24]
    frame[(frame["split"] == "test") | frame["player"].isin(kept)].to_csv(data_dir / "data_reid" / "train_df.csv", index=False)
    return data_dir


@pytest.fixture(scope="module")
def trained(twin, tmp_path_factory) -> Path:
    """A finished 2-epoch run with a zero-shot evaluation; returns its folder."""
    config = Configuration(**TINY, epochs=2, zero_shot=True, data_dir=twin, model_path=tmp_path_factory.mktemp("runs"),
                           run_name="tiny")
    return run(config)


def test_two_epochs_raise_the_test_map_above_zero_shot(trained):
    metrics = pd.read_csv(trained / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1, 2]
    assert list(metrics.columns[:4]) == ["epoch", "map_raw", "map_classic", "map_hard"]
    assert {"rank1_raw", "rank5_classic", "rank10_hard", "minp_raw", "train_loss", "lr"} <= set(metrics.columns)
    assert metrics["map_raw"].iloc[-1] > metrics["map_raw"].iloc[0] + 0.05
    assert metrics[["map_raw", "map_classic", "map_hard"]].notna().all().all()
    for name in ("config.json", "log.txt", "curves.png", "last.pth", "best.pth"):
        assert (trained / name).is_file(), name
    log = (trained / "log.txt").read_text()
    assert "epoch 2: loss" in log
    assert "training fp32 (bf16 asked: no autocast on the CPU), evaluation fp32" in log
    assert "InfoNCE temperature: logit scale 2.6593 (exp 14.29)" in log  # timm: ln(1/0.07), as published
    # the CMC configurations the published log printed, for every distance, at every evaluation
    assert log.count("allshots      cuhk03  market1501") == 3 and log.count("top-10") == 9

    last = load_checkpoint(trained / "last.pth")
    assert {"model", "criterion", "optimizer", "scheduler", "epoch", "step", "rng", "config"} <= set(last)
    assert last["epoch"] == 2 and last["config"]["img_size"] == [48, 24]
    best = load_checkpoint(trained / "best.pth")
    assert best["epoch"] == metrics["map_hard"].iloc[1:].idxmax()  # row index = epoch
    encoder, config = load_encoder(trained / "best.pth")
    assert config["model"] == "test_resnet" and encoder.img_size == (48, 24)


def test_resume_defaults_to_the_run_configuration(trained):
    config = parse_training_config(Configuration, ["--resume", str(trained / "last.pth"), "--epochs", "5"])
    assert config.model == "test_resnet" and config.img_size == (48, 24) and config.lr == 2e-3
    assert config.epochs == 5 and config.resume == trained / "last.pth"


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    run_dir = tmp_path / "poisoned"
    shutil.copytree(trained, run_dir)
    state = load_checkpoint(run_dir / "last.pth")
    state["model"] = {name: torch.full_like(value, float("nan")) if value.is_floating_point() else value
                      for name, value in state["model"].items()}
    save_checkpoint(state, run_dir / "last.pth")
    before = (run_dir / "last.pth").read_bytes()
    config = parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth"), "--epochs", "3"])
    with pytest.raises(NonFiniteLossError, match="epoch 3, step 1"):
        run(config)
    assert (run_dir / "last.pth").read_bytes() == before
    assert f"the last good checkpoint is {run_dir / 'last.pth'}" in (run_dir / "log.txt").read_text()


def stop_in_epoch(epoch_to_stop: int, after_batches: int):
    """A train_one_epoch that is interrupted (as by Ctrl-C) after some batches of one epoch."""
    real = training.train_one_epoch

    def interrupted(model, loader, *args, **kwargs):
        if inspect.signature(real).bind(model, loader, *args, **kwargs).arguments["epoch"] != epoch_to_stop:
            return real(model, loader, *args, **kwargs)

        def batches():
            for index, batch in enumerate(loader):
                if index == after_batches:
                    raise KeyboardInterrupt
                yield batch

        return real(model, batches(), *args, **kwargs)

    return interrupted


def test_an_interrupted_and_resumed_run_ends_with_the_same_weights(small_twin, tmp_path, monkeypatch):
    base = Configuration(**(TINY | {"img_size": (24, 12), "batch_size": 16}), epochs=2, zero_shot=False, rerank=False,
                         best_metric="map_raw", data_dir=small_twin, model_path=tmp_path)
    uninterrupted = run(dataclasses.replace(base, run_name="whole"))

    with monkeypatch.context() as patch:
        patch.setattr(training, "train_one_epoch", stop_in_epoch(2, after_batches=3))
        with pytest.raises(KeyboardInterrupt):
            run(dataclasses.replace(base, run_name="cut"))
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["epoch"] == 1
    resumed = run(dataclasses.replace(base, resume=tmp_path / "cut" / "last.pth"))
    assert resumed == tmp_path / "cut"

    whole, cut = load_checkpoint(uninterrupted / "last.pth"), load_checkpoint(resumed / "last.pth")
    assert cut["epoch"] == whole["epoch"] == 2 and cut["step"] == whole["step"]
    for part in ("model", "criterion"):
        for name, value in whole[part].items():
            torch.testing.assert_close(cut[part][name], value, rtol=0, atol=1e-6)
    metrics = pd.read_csv(resumed / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert "resuming run cut" in (resumed / "log.txt").read_text()

    # a finished run can be lengthened in place
    longer = run(dataclasses.replace(base, resume=resumed / "last.pth", epochs=3))
    assert pd.read_csv(longer / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert load_checkpoint(longer / "last.pth")["epoch"] == 3


def test_torchrun_with_two_cpu_processes(small_twin, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "train_our_post.py"), *TINY_FLAGS, "--epochs", "1", "--zero-shot", "--no-rerank", "--best-metric", "map_raw",
               "--data-dir", str(small_twin), "--model-path", str(tmp_path), "--run-name", "ddp"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "ddp" / "log.txt").read_text()
    assert "on 2 process(es)" in log and "batches of 8 x 2" in log
    assert log.count("starting run") == 1  # only rank 0 writes
    assert result.stdout.count("starting run") == 1  # ... and prints
    assert pd.read_csv(tmp_path / "ddp" / "metrics.csv")["epoch"].tolist() == [0, 1]
    assert len(load_checkpoint(tmp_path / "ddp" / "last.pth")["rng"]) == 2  # every rank's random state


@pytest.mark.parametrize("script, default", [("train_our_post.py", "eva_large_patch14_336.in22k_ft_in22k_in1k"),
                                             ("train_our_post_resnet.py", "resnet50")])
def test_scripts_explain_their_fields(script, default):
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    for flag in ("--model", "--pretrained-file", "--img-size", "--loss", "--epochs", "--batch-size", "--lr", "--seed",
                 "--data-dir", "--model-path", "--run-name", "--resume", "--zero-shot", "--device", "--num-workers",
                 "--fold", "--train-on-all"):
        assert flag in text, flag
    assert f"(default: {default})" in text


def test_the_resnet_recipe_differs_only_in_defaults():
    import train_our_post_resnet

    vit, resnet = Configuration(), train_our_post_resnet.Configuration()
    assert [f.name for f in dataclasses.fields(vit)] == [f.name for f in dataclasses.fields(resnet)]
    differing = {f.name for f in dataclasses.fields(vit) if getattr(vit, f.name) != getattr(resnet, f.name)}
    assert differing == {"model", "pretrained", "epochs", "batch_size", "lr", "prob_flip"}
    assert (resnet.model, resnet.lr, resnet.epochs, resnet.batch_size, resnet.prob_flip) == ("resnet50", 4e-4, 50, 64, 0.0)
    assert (vit.lr, vit.epochs, vit.batch_size, vit.prob_flip, vit.loss) == (4e-5, 8, 32, 0.5, "infonce")
    # the published behaviour where it is the default
    assert (vit.zero_shot, vit.eval_precision, vit.logit_scale_init, vit.fast_kernels, vit.batch_packing) == (
        False, "fp32", "model", False, "requeue")
    assert (vit.mixed_precision, vit.batch_scope) == ("bf16", "per_gpu")  # listed differences, flags restore them


def test_the_initial_temperature_is_the_model_own_unless_given():
    assert training.initial_logit_scale("model", None) == pytest.approx(math.log(1 / 0.07))  # timm
    assert training.initial_logit_scale("model", 4.6052) == 4.6052  # a CLIP tower's learned scale
    assert training.initial_logit_scale(3.0, 4.6052) == 3.0
    assert parse_training_config(Configuration, ["--logit-scale-init", "2.5"]).logit_scale_init == 2.5
    assert parse_training_config(Configuration, ["--logit-scale-init", "model"]).logit_scale_init == "model"


def test_the_batch_is_per_gpu_or_split_over_the_gpus():
    assert training.rank_batch_size(Configuration(batch_size=32), world_size=4) == 32
    assert training.rank_batch_size(Configuration(batch_size=32, batch_scope="total"), world_size=4) == 8
    with pytest.raises(ValueError, match="does not split evenly over 3"):
        training.rank_batch_size(Configuration(batch_size=32, batch_scope="total"), world_size=3)


def test_gpu_kernel_settings_default_to_the_published_run():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32)
    try:
        training.set_gpu_kernels(fast=False)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                torch.backends.cuda.matmul.allow_tf32) == (False, True, False)
        training.set_gpu_kernels(fast=True)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                torch.backends.cuda.matmul.allow_tf32) == (True, False, True)
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32) = saved
