"""Whole training runs on the small synthetic twin with tiny models, on CPU.

Runs: a 2-epoch run that learns (copies of its folder serve the resume and fault tests), an
uninterrupted run against which runs interrupted by Ctrl-C and by SIGKILL are resumed, a diverging
run, a 2-process torchrun (gloo) run.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch
from script_cases import case, run_here

import reid.training as training
from reid.engine import load_checkpoint, load_encoder
from reid.errors import InputError, RunFailure, run_script
from reid.run_folder import claim_run_folder
from reid.training import parse_training_config, run
from train_our_post import Configuration

REPO = Path(__file__).resolve().parents[1]
# test_resnet (0.4 M parameters) at 48 x 24 learns the twin's kits within an epoch from random init.
TINY = dict(model="test_resnet", pretrained=False, img_size=(48, 24), batch_size=32, lr=2e-3, warmup_epochs=0.0,
            scheduler="constant", device="cpu", num_workers=0, verbose=False)
TINY_FLAGS = ["--model", "test_resnet", "--no-pretrained", "--img-size", "24", "12", "--batch-size", "8", "--lr", "2e-3",
              "--warmup-epochs", "0", "--scheduler", "constant", "--device", "cpu", "--num-workers", "0", "--no-verbose"]


@pytest.fixture(scope="module")
def twin(twin_data) -> Path:
    """The small synthetic twin with its train_df.csv (drawn once per session); returns data_dir."""
    return twin_data


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


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a finished run's folder (tests that resume or replace it leave the original alone)."""
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def contents(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(run_dir.iterdir()) if path.is_file()}


# ---------------------------------------------------------------- divergence (issue 10, item 1)

def test_a_diverging_update_stops_the_run_before_anything_is_evaluated_or_saved(twin, tmp_path):
    # The case: the update at the end of epoch 1 (step 36 of 36) makes the BatchNorm statistics
    # infinite; the old loop evaluated that model (printing mAP numbers) and saved it as last.pth and best.pth.
    config = Configuration(**(TINY | {"lr": 1e10}), gradient_accumulation=18, epochs=2, zero_shot=False, data_dir=twin,
                           model_path=tmp_path, run_name="diverged")
    with pytest.raises(RunFailure, match="epoch 1, step 36 of 36") as caught:
        run(config)
    assert "running_var" in str(caught.value) and "no checkpoint was written" in str(caught.value)
    run_dir = tmp_path / "diverged"
    assert not list(run_dir.glob("*.pth")) and not (run_dir / "metrics.csv").exists()
    log = (run_dir / "log.txt").read_text()
    assert "held-out scores" not in log and "error: non-finite values in" in log


def test_weights_that_give_non_finite_features_are_never_scored(small_twin, tmp_path, monkeypatch):
    # Finite but huge weights (as after a far too large step) overflow in the forward pass.
    def blow_up(model, *args, **kwargs):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1e30)
        return {"loss": 1.0, "lr": 0.0}

    monkeypatch.setattr(training.engine, "train_one_epoch", blow_up)
    config = Configuration(**(TINY | {"img_size": (24, 12), "batch_size": 16}), epochs=1, zero_shot=False, rerank=False,
                           best_metric="map_raw", data_dir=small_twin, model_path=tmp_path, run_name="huge")
    with pytest.raises(RunFailure, match="held-out features of epoch 1 hold NaN or infinite values"):
        run(config)
    assert not list((tmp_path / "huge").glob("*.pth")) and not (tmp_path / "huge" / "metrics.csv").exists()


def test_a_resumed_run_that_diverges_names_the_checkpoint_it_keeps(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    before = contents(run_dir)
    config = parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth"), "--epochs", "3", "--lr", "1e10"])
    with pytest.raises(RunFailure, match="at epoch 3, step") as caught:
        run(config)
    assert f"the last good checkpoint is {run_dir / 'last.pth'} (epoch 2)" in str(caught.value)
    for name in ("last.pth", "best.pth", "metrics.csv"):
        assert (run_dir / name).read_bytes() == before[name], name
    assert str(caught.value) in (run_dir / "log.txt").read_text()


def test_a_checkpoint_with_non_finite_weights_is_not_resumed(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    state = load_checkpoint(run_dir / "last.pth")
    state["model"] = {name: torch.full_like(value, float("nan")) if value.is_floating_point() else value
                      for name, value in state["model"].items()}
    torch.save(state, run_dir / "last.pth")  # as an older version of this project could write it
    log = (run_dir / "log.txt").read_bytes()
    config = parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth"), "--epochs", "3"])
    with pytest.raises(InputError, match="holds NaN or infinite values .model.backbone.conv1.0.weight"):
        run(config)
    assert (run_dir / "log.txt").read_bytes() == log


# ---------------------------------------------------------------- flags beside --resume (items 2 and 4)

def record_and_stop(seen: dict):
    """A train_one_epoch that records what the run would train with, then stops it (as Ctrl-C)."""
    def recording(model, loader, optimizer, scheduler, device, epoch, **kwargs):
        group = optimizer.param_groups[0]
        seen.update(epoch=epoch, lr=group["lr"], weight_decay=group["weight_decay"],
                    clipping=kwargs["gradient_clipping"], lr_at_end=scheduler.lr_lambdas[0](10**6) * scheduler.base_lrs[0])
        raise KeyboardInterrupt

    return recording


def test_flags_given_beside_resume_take_effect(trained, tmp_path, monkeypatch):
    run_dir = copy_of(trained, tmp_path)
    seen: dict = {}
    monkeypatch.setattr(training.engine, "train_one_epoch", record_and_stop(seen))
    args = ["--resume", str(run_dir / "last.pth"), "--epochs", "4", "--lr", "5e-3", "--weight-decay", "0.2",
            "--gradient-clipping", "2.5", "--scheduler", "polynomial", "--lr-end", "1e-4"]
    with pytest.raises(KeyboardInterrupt):
        run(parse_training_config(Configuration, args))
    # 2 of 4 epochs done, no warm-up: the polynomial curve is at (1 - 1/2) ** 2 of the way from 1e-4 to 5e-3
    assert seen["epoch"] == 3
    assert seen["lr"] == pytest.approx(1e-4 + (5e-3 - 1e-4) * 0.25, rel=1e-9)
    assert seen["lr_at_end"] == pytest.approx(1e-4, rel=1e-9)
    assert seen["weight_decay"] == 0.2 and seen["clipping"] == 2.5
    log = (run_dir / "log.txt").read_text()
    assert ("changed on resume: epochs 2 -> 4, lr 0.002 -> 0.005, weight_decay 0.01 -> 0.2, scheduler 'constant' -> "
            "'polynomial', lr_end 1e-05 -> 0.0001, gradient_clipping None -> 2.5") in log
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["lr"] == 5e-3 and saved["resume"] is None  # --config of that file starts a new run, no resume


def test_flags_that_cannot_change_on_resume_are_refused_by_name(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    before = contents(run_dir)
    args = ["--resume", str(run_dir / "last.pth"), "--batch-size", "16", "--img-size", "32", "--loss", "infonce+id",
            "--epochs", "4"]
    with pytest.raises(InputError) as caught:
        run(parse_training_config(Configuration, args))
    message = str(caught.value)
    assert "--batch-size (checkpoint: 32, given: 16)" in message and "--img-size (checkpoint: [48, 24], given: [32])" in message
    assert "--loss (checkpoint: 'infonce', given: 'infonce+id')" in message and "--epochs" not in message
    assert contents(run_dir) == before  # nothing written, not even to log.txt
    with pytest.raises(InputError, match="--epochs 1 is fewer than the 2 already trained"):
        run(parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth"), "--epochs", "1"]))


@pytest.mark.parametrize("written", ["{not json", "foreign"])
def test_resume_takes_the_checkpoint_configuration_over_the_folder_config_json(trained, tmp_path, written):
    run_dir = copy_of(trained, tmp_path)
    if written == "foreign":
        written = json.dumps(json.loads((run_dir / "config.json").read_text()) | {"model": "test_vit", "lr": 0.5})
    (run_dir / "config.json").write_text(written)
    config = parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth")])
    assert (config.model, config.lr, config.img_size) == ("test_resnet", 2e-3, (48, 24))
    assert run(config) == run_dir  # all 2 epochs done: nothing to train
    note = [line for line in (run_dir / "log.txt").read_text().splitlines() if "note:" in line]
    assert len(note) == 1 and "the checkpoint's configuration is used and config.json rewritten" in note[0]
    assert ("is unreadable" in note[0]) if written.startswith("{not") else ("model 'test_vit' (checkpoint: 'test_resnet')" in note[0]
                                                                          and "lr 0.5 (checkpoint: 0.002)" in note[0])
    assert json.loads((run_dir / "config.json").read_text())["model"] == "test_resnet"


# ---------------------------------------------------------------- run folders (items 3 and 9)

def test_an_existing_run_folder_is_refused_unless_overwrite(trained, twin, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    before = contents(run_dir)
    again = Configuration(**TINY, epochs=0, zero_shot=False, data_dir=twin, model_path=tmp_path, run_name="tiny")
    with pytest.raises(InputError, match=f"{run_dir} already holds a run .config.json, log.txt, metrics.csv, curves.png, "
                                         f"last.pth, best.pth.: give --resume {run_dir / 'last.pth'} to continue it, "
                                         "--overwrite to replace it"):
        run(again)
    assert contents(run_dir) == before
    with pytest.raises(FileNotFoundError):  # --overwrite, but the new run cannot start: the earlier one stays
        run(dataclasses.replace(again, overwrite=True, data_dir=tmp_path / "nowhere"))
    assert contents(run_dir) == before

    # --overwrite: the earlier run's outputs go, the new run's come
    run(dataclasses.replace(again, overwrite=True))
    assert sorted(contents(run_dir)) == ["config.json", "log.txt"]
    log = (run_dir / "log.txt").read_text()
    assert log.count("starting run") == 1 and "note: --overwrite: removed the earlier run's config.json, log.txt" in log


def test_the_script_reports_a_refused_resume_in_one_line_with_status_2(trained, capsys):
    import train_our_post

    args = ["--resume", str(trained / "last.pth"), "--seed", "5"]
    with pytest.raises(SystemExit) as caught:  # what the script's last line runs
        run_script(train_our_post.main, partial(parse_training_config, Configuration, args))
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --resume {trained / 'last.pth'}: cannot change on resume: --seed (checkpoint: 1, given: 5). Leave these "
        "out to continue the run, or start a new run"]


def test_a_run_folder_in_use_is_refused(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    before = contents(run_dir)
    holder = claim_run_folder(run_dir, resume=True, overwrite=False)  # as a live run holds it
    try:
        with pytest.raises(InputError, match=f"{run_dir} is in use by a live run .process {os.getpid()} on "):
            run(parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth")]))
    finally:
        holder.release()
    assert contents(run_dir) == before and not (run_dir / ".lock").exists()


def test_a_run_that_fails_before_it_starts_leaves_no_folder(tmp_path):
    (tmp_path / "empty" / "data_reid").mkdir(parents=True)
    config = Configuration(**TINY, epochs=1, data_dir=tmp_path / "empty", model_path=tmp_path / "model", run_name="none")
    with pytest.raises(FileNotFoundError, match="train_df.csv not found"):
        run(config)
    assert not (tmp_path / "model" / "none").exists()


# ---------------------------------------------------------------- interruptions

UNINTERRUPTED = dict(TINY | {"img_size": (24, 12), "batch_size": 16}, epochs=2, zero_shot=False, rerank=False,
                     best_metric="map_raw")


@pytest.fixture(scope="module")
def whole(small_twin, tmp_path_factory) -> Path:
    """A 2-epoch run never interrupted (the runs below are interrupted and resumed against it)."""
    return run(Configuration(**UNINTERRUPTED, data_dir=small_twin, model_path=tmp_path_factory.mktemp("whole"), run_name="whole"))


def assert_same_weights(resumed: Path, whole: Path) -> None:
    expected, got = load_checkpoint(whole / "last.pth"), load_checkpoint(resumed / "last.pth")
    assert got["epoch"] == expected["epoch"] and got["step"] == expected["step"]
    for part in ("model", "criterion"):
        for name, value in expected[part].items():
            torch.testing.assert_close(got[part][name], value, rtol=0, atol=1e-6)


def stop_in_epoch(epoch_to_stop: int, after_batches: int):
    """A train_one_epoch that is interrupted (as by Ctrl-C) after some batches of one epoch."""
    real = training.engine.train_one_epoch

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


def test_an_interrupted_and_resumed_run_ends_with_the_same_weights(whole, small_twin, tmp_path, monkeypatch):
    base = Configuration(**UNINTERRUPTED, data_dir=small_twin, model_path=tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(training.engine, "train_one_epoch", stop_in_epoch(2, after_batches=3))
        with pytest.raises(KeyboardInterrupt) as interrupted:
            run(dataclasses.replace(base, run_name="cut"))
    kept = f"epoch 1 is saved in {tmp_path / 'cut' / 'last.pth'}; go on with --resume {tmp_path / 'cut' / 'last.pth'}"
    assert str(interrupted.value) == kept  # what run_script prints after "interrupted: "
    assert f"interrupted: {kept}" in (tmp_path / "cut" / "log.txt").read_text()
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["epoch"] == 1
    assert not (tmp_path / "cut" / ".lock").exists()
    resumed = run(dataclasses.replace(base, resume=tmp_path / "cut" / "last.pth"))
    assert resumed == tmp_path / "cut"
    assert_same_weights(resumed, whole)
    metrics = pd.read_csv(resumed / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert "resuming run cut" in (resumed / "log.txt").read_text()

    # a finished run can be lengthened in place
    longer = run(dataclasses.replace(base, resume=resumed / "last.pth", epochs=3))
    assert pd.read_csv(longer / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert load_checkpoint(longer / "last.pth")["epoch"] == 3


def test_a_killed_run_is_resumed_exactly_and_holds_its_folder_while_alive(whole, small_twin, tmp_path):
    run_dir = tmp_path / "killed"
    flags = [*TINY_FLAGS, "--batch-size", "16", "--epochs", "2", "--no-zero-shot", "--no-rerank", "--best-metric", "map_raw",
             "--data-dir", str(small_twin), "--model-path", str(tmp_path), "--run-name", "killed"]
    child = subprocess.Popen([sys.executable, str(REPO / "train_our_post.py"), *flags], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "last.pth").exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the child run saved no checkpoint in time"
            time.sleep(0.02)
        # a second run in the same folder, even with --overwrite, is refused while the first lives
        with pytest.raises(InputError, match=f"in use by a live run .process {child.pid} on "):
            run(Configuration(**UNINTERRUPTED, data_dir=small_twin, model_path=tmp_path, run_name="killed", overwrite=True))
        child.send_signal(signal.SIGKILL)  # in epoch 2: no handler runs, the lock file stays
    finally:
        child.kill()
        child.wait()
    assert load_checkpoint(run_dir / "last.pth")["epoch"] == 1 and (run_dir / ".lock").exists()
    (run_dir / f".last.pth.tmp{child.pid}").write_bytes(b"half a checkpoint")  # as a save killed half-way leaves

    resumed = run(parse_training_config(Configuration, ["--resume", str(run_dir / "last.pth")]))
    assert_same_weights(resumed, whole)
    log = (run_dir / "log.txt").read_text()
    assert f"note: replaced the stale lock of process {child.pid} on " in log
    assert f"note: removed the temporary file(s) of an interrupted save: .last.pth.tmp{child.pid}" in log
    assert sorted(path.name for path in run_dir.iterdir() if path.name.startswith(".")) == []


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
    (result,) = run_here([case(script, "--help")])  # as python script --help, in this process
    assert result.status == 0, result.stderr
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
