"""Schedules, checkpoints, random states, feature extraction and the stops on NaN or inf."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from reid.engine import (
    IMAGENET_MEAN,
    OPENAI_MEAN,
    NonFiniteError,
    PairModel,
    autocast_dtype,
    build_scheduler,
    describe_precision,
    load_checkpoint,
    load_encoder,
    lr_factor,
    rng_state,
    save_checkpoint,
    schedule_steps,
    set_rng_state,
    train_one_epoch,
)
from reid.errors import InputError, RunFailure
from reid.inference import extract_features
from reid.losses import ReidLoss
from reid.models import build_model
from tests.reference_cases import REFERENCE_DIR

# Three optimiser steps of the published trainer, computed once by running the published code.
PUBLISHED_STEPS = REFERENCE_DIR / "published_trainer_steps.json"


def test_polynomial_schedule_with_warmup_at_given_steps():
    # 10 warm-up steps, 110 in all, peak 4e-5, end 1e-5, power 2
    end = 1e-5 / 4e-5
    factor = lambda step: lr_factor(step, "polynomial", warmup_steps=10, total_steps=110, end_factor=end)  # noqa: E731
    assert factor(0) == 0.0
    assert factor(5) == pytest.approx(0.5)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(end + (1 - end) * 0.25)  # half-way: (1 - 0.5) ** 2
    assert factor(110) == pytest.approx(end)
    assert factor(500) == pytest.approx(end)  # stays at lr_end


def test_other_schedules_at_given_steps():
    assert lr_factor(60, "cosine", 10, 110) == pytest.approx(0.5)
    assert lr_factor(35, "cosine", 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(85, "linear", 10, 110) == pytest.approx(0.25)
    assert lr_factor(100, "constant", 10, 110) == 1.0
    assert lr_factor(2, "constant", 10, 110) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(20, "step", 10, 110)


def test_scheduler_drives_the_optimiser_learning_rate():
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=4e-5)
    scheduler = build_scheduler(optimizer, "polynomial", warmup_steps=4, total_steps=12, lr_end=1e-5)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(2e-5) and lrs[4] == pytest.approx(4e-5)
    assert lrs[8] == pytest.approx(1e-5 + 3e-5 * 0.25) and lrs[12] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path):
    encoder = build_model({"model": "test_vit", "img_size": 32})
    config = {"model": "test_vit", "img_size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "remove_proj": True}
    path = save_checkpoint({"model": encoder.state_dict(), "config": config, "epoch": 3, "rng": [rng_state()]},
                           tmp_path / "run" / "last.pth")
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pth"]  # no temporary file left behind
    state = load_checkpoint(path)  # weights_only=True inside
    assert state["epoch"] == 3
    rebuilt, saved_config = load_encoder(path)
    assert saved_config["model"] == "test_vit" and rebuilt.img_size == (32, 32)
    for key, value in encoder.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_checkpoint(tmp_path / "nothere.pth")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_encoder({"weights": 1})


def test_random_states_survive_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_extracted_features_are_unit_float32_rows_in_order():
    encoder = build_model({"model": "test_vit", "img_size": 32})
    images = torch.randn(10, 3, 32, 32)
    loader = [images[:4], images[4:]]
    features = extract_features(encoder, loader, torch.device("cpu"))
    assert features.shape == (10, 64) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    with torch.no_grad():
        direct = nn.functional.normalize(encoder(images[6:7]), dim=1).numpy()
    np.testing.assert_allclose(features[6:7], direct, rtol=1e-4, atol=1e-5)
    flipped = extract_features(encoder, loader, torch.device("cpu"), flip=True)
    with torch.no_grad():
        both = encoder(images[6:7]) + encoder(torch.flip(images[6:7], dims=[3]))
    np.testing.assert_allclose(flipped[6:7], nn.functional.normalize(both, dim=1).numpy(), rtol=1e-4, atol=1e-5)


def tiny_pair_model() -> PairModel:
    encoder = build_model({"model": "test_vit", "img_size": 32})
    return PairModel(encoder, ReidLoss("infonce", embed_dim=encoder.embed_dim))


def pair_batches(count: int, batch: int = 4) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, 32, 32, generator=generator), torch.randn(batch, 3, 32, 32, generator=generator),
             torch.arange(batch)) for _ in range(count)]


def test_one_epoch_updates_the_weights_and_reports_the_loss():
    torch.manual_seed(0)
    model = tiny_pair_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = build_scheduler(optimizer, "constant", warmup_steps=0, total_steps=4)
    stats = train_one_epoch(model, pair_batches(4), optimizer, scheduler, torch.device("cpu"), epoch=1,
                            gradient_accumulation=2, gradient_clipping=1.0, verbose=False)
    assert scheduler.last_epoch == 2  # 4 batches, accumulation 2
    assert math.isfinite(stats["loss"]) and stats["loss"] == pytest.approx(stats["infonce"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_nan_loss_stops_naming_epoch_and_step():
    model = tiny_pair_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = pair_batches(3)
    batches[1][0][0, 0, 0, 0] = float("nan")  # the second batch holds a NaN pixel
    with pytest.raises(NonFiniteError, match="the loss is nan at epoch 7, step 2 of 3"):
        train_one_epoch(model, batches, optimizer, None, torch.device("cpu"), epoch=7, verbose=False)


def test_an_infinite_gradient_stops_before_the_optimiser_step():
    torch.manual_seed(0)
    model = tiny_pair_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = pair_batches(4)
    steps = []
    hook = model.criterion.logit_scale.register_hook(lambda grad: grad * math.inf if len(steps) == 1 else grad)
    optimizer.register_step_post_hook(lambda *args: steps.append(1))
    with pytest.raises(NonFiniteError, match="the gradient norm is inf at epoch 1, step 4 of 4 .before the optimiser step"):
        train_one_epoch(model, batches, optimizer, None, torch.device("cpu"), epoch=1, gradient_accumulation=2, verbose=False)
    hook.remove()
    assert len(steps) == 1  # the update of steps 3-4 was not made
    assert issubclass(NonFiniteError, RunFailure)  # a script reports it in one line, exit status 1


class Poison(nn.Module):
    """Wraps a model; after ``clean`` forward passes it makes one BatchNorm statistic infinite (as a diverged update)."""

    def __init__(self, model: nn.Module, clean: int) -> None:
        super().__init__()
        self.model, self.clean = model, clean
        self.norm = nn.BatchNorm1d(2)

    def forward(self, *batch):
        self.clean -= 1
        if self.clean < 0:
            self.norm.running_var[1] = math.inf
        return self.model(*batch)


def test_non_finite_buffers_stop_after_the_optimiser_step_and_non_finite_weights_at_the_end():
    model = Poison(tiny_pair_model(), clean=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteError, match=r"non-finite values in norm.running_var after the optimiser step at epoch 2, "
                                             r"step 3 of 4"):
        train_one_epoch(model, pair_batches(4), optimizer, None, torch.device("cpu"), epoch=2, verbose=False)
    # a weight made non-finite outside any step (here: after the last one) is found at the end of the epoch
    model = tiny_pair_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = pair_batches(3)

    def poisoned_after_the_last_batch():
        yield from batches
        with torch.no_grad():
            model.criterion.logit_scale.fill_(math.nan)

    with pytest.raises(NonFiniteError, match=r"non-finite values in criterion.logit_scale at the end of epoch 5, step 3;"):
        train_one_epoch(model, poisoned_after_the_last_batch(), optimizer, None, torch.device("cpu"), epoch=5,
                        gradient_accumulation=4, verbose=False)


def test_a_checkpoint_with_a_non_finite_tensor_is_never_written(tmp_path):
    path = save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, tmp_path / "last.pth")
    before = path.read_bytes()
    optimizer_state = {"state": {0: {"step": torch.tensor(4.0), "exp_avg_sq": torch.tensor([1.0, math.inf])}}}
    with pytest.raises(NonFiniteError, match=r"non-finite values in optimizer.state.0.exp_avg_sq: .*last.pth not written"):
        save_checkpoint({"model": {"w": torch.ones(3)}, "optimizer": optimizer_state, "epoch": 2}, path)
    with pytest.raises(NonFiniteError, match=r"model.w"):
        save_checkpoint({"model": {"w": torch.tensor([math.nan])}, "scores": {"map_hard": math.nan}}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]
    # non-tensor NaNs (the scores of a run without re-ranking) are not weights
    save_checkpoint({"model": {"w": torch.ones(3)}, "scores": {"map_hard": math.nan}}, path)


def test_precision_names_map_to_autocast_dtypes(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert [autocast_dtype(cpu, name) for name in ("bf16", "fp16", "fp32")] == [None, None, None]  # CPU: fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert [autocast_dtype(gpu, name) for name in ("bf16", "fp16", "fp32")] == [torch.bfloat16, torch.float16, None]
    assert describe_precision(gpu, "bf16") == "bf16 autocast"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # e.g. a V100
    assert autocast_dtype(gpu, "bf16") == torch.float16
    assert describe_precision(gpu, "bf16") == "fp16 autocast + gradient scaler (bf16 asked, this GPU has no bf16)"
    assert describe_precision(cpu, "fp16") == "fp32 (fp16 asked: no autocast on the CPU)"
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype(gpu, True)


class RecordingLoss(nn.Module):
    """A loss that remembers the dtype its similarity matmul ran in (the logits of InfoNCE)."""

    def forward(self, query, gallery, labels):
        logits = query @ gallery.t()
        self.dtype = logits.dtype
        return logits.float().sum(), {}


@pytest.mark.parametrize("under_autocast, dtype", [(False, torch.float32), (True, torch.bfloat16)])
def test_the_loss_runs_in_float32_unless_asked_to_run_under_the_autocast(under_autocast, dtype):
    # under_autocast=True is the published fp16 recipe (its logits matmul ran in fp16); CPU bf16 stands in.
    encoder = build_model({"model": "test_vit", "img_size": 32})
    model = PairModel(encoder, RecordingLoss(), loss_under_autocast=under_autocast)
    query, gallery, labels = pair_batches(1)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(query, gallery, labels)
    assert model.criterion.dtype == dtype


def test_schedule_steps_round_down_as_the_published_trainer():
    assert schedule_steps(267, 8, 1.0) == (267, 2136)
    assert schedule_steps(10, 3, 0.25) == (2, 30)  # int(2.5)
    assert schedule_steps(10, 3, 1.0, gradient_accumulation=4) == (2, 7)  # in optimiser steps


def published_like_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The initial weights of the published run (see PUBLISHED_STEPS): sorted keys, one generator."""
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name in sorted(state):
        noise = torch.randn(state[name].shape, generator=generator, dtype=torch.float32)
        weights[name] = 1 + 0.05 * noise if state[name].ndim == 1 and name.endswith("weight") else 0.05 * noise
    return weights


def test_three_adamw_steps_equal_the_published_trainer():
    reference = json.loads(PUBLISHED_STEPS.read_text())
    settings = reference["settings"]
    encoder = build_model({"model": settings["model"]})  # the model's own size, as the published TimmModel
    initial = published_like_weights(encoder.backbone.state_dict())
    encoder.backbone.load_state_dict(initial)
    model = PairModel(encoder, ReidLoss("infonce", encoder.embed_dim, label_smoothing=0.1))
    assert model.criterion.logit_scale.item() == pytest.approx(reference["initial_logit_scale"], abs=1e-7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    warmup, total = schedule_steps(settings["batches"], settings["epochs"], settings["warmup_epochs"])
    scheduler = build_scheduler(optimizer, settings["scheduler"], warmup, total, lr_end=settings["lr_end"])
    losses, lrs = [], []
    for i in range(settings["batches"]):
        generator = torch.Generator().manual_seed(100 + i)
        query = torch.randn(4, 3, 160, 160, generator=generator)
        batch = (query, query + 0.5 * torch.randn(4, 3, 160, 160, generator=generator), torch.arange(4))
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(train_one_epoch(model, [batch], optimizer, scheduler, torch.device("cpu"), epoch=1, verbose=False)["loss"])
    lrs.append(optimizer.param_groups[0]["lr"])
    # Same float32 operations in the same order on the CPU: equal up to float32 rounding of
    # reductions (another BLAS or thread count may reorder them). Losses: 1e-5 relative. Weights: an
    # AdamW step moves a weight by at most lr = 1e-3, so 1e-6 absolute is a thousandth of one step.
    assert lrs == pytest.approx(reference["lrs"], rel=1e-12)
    assert losses == pytest.approx(reference["losses"], rel=1e-5)
    assert model.criterion.logit_scale.item() == pytest.approx(reference["final_logit_scale"], abs=1e-6)
    final = encoder.backbone.state_dict()
    assert sorted(final) == sorted(reference["updates"])
    for name, expected in reference["updates"].items():
        update = (final[name] - initial[name]).double()
        assert float(update.sum()) == pytest.approx(expected["sum"], abs=1e-6), name
        assert float(update.norm()) == pytest.approx(expected["norm"], abs=1e-6), name
        assert update.flatten()[:3].tolist() == pytest.approx(expected["first"], abs=1e-6), name


def published_timm_state(encoder) -> dict[str, torch.Tensor]:
    """What the published TimmModel saved: the timm model's keys under model., plus model.logit_scale."""
    state = {f"model.{key[len('backbone.'):]}": value for key, value in encoder.state_dict().items()}
    return state | {"model.logit_scale": torch.tensor(2.6593)}


def test_a_published_timm_checkpoint_loads_with_the_published_normalisation(tmp_path):
    source = build_model({"model": "test_vit", "img_size": 32})
    path = tmp_path / "weights_e4.pth"
    torch.save(published_timm_state(source), path)
    encoder, config = load_encoder(path, model="test_vit", img_size=32)
    for key, value in source.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key
    assert encoder.mean == IMAGENET_MEAN and config["mean"] == list(IMAGENET_MEAN) and encoder.img_size == (32, 32)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), source.eval()(images))
    _, overridden = load_encoder(path, model="test_vit", img_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert overridden["mean"] == [0.5, 0.5, 0.5]
    # saved from the DataParallel wrapper itself: keys module.model.*
    wrapped, _ = load_encoder({f"module.{key}": value for key, value in published_timm_state(source).items()},
                              model="test_vit", img_size=32)
    assert torch.equal(wrapped.backbone.pos_embed, source.backbone.pos_embed)


def test_a_published_open_clip_checkpoint_loads_its_visual_tower(tmp_path):
    import open_clip

    clip = open_clip.create_model("ViT-S-32")
    clip.visual.proj = None  # the published remove_proj=True
    # OpenClipModel deleted the text tower: its state dict holds the visual tower and the logit scale.
    state = {f"model.{key}": value for key, value in clip.state_dict().items() if key.startswith(("visual.", "logit_scale"))}
    path = tmp_path / "weights_e2.pth"
    torch.save(state, path)
    encoder, config = load_encoder(path, model="open_clip:ViT-S-32:none")
    assert config["remove_proj"] is True and encoder.mean == OPENAI_MEAN and encoder.img_size == (224, 224)
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), clip.visual.eval()(images))


def test_checkpoints_that_fit_no_layout_or_no_model_are_explained(tmp_path):
    source = build_model({"model": "test_vit", "img_size": 32})
    path = tmp_path / "weights_e1.pth"
    torch.save(published_timm_state(source), path)
    with pytest.raises(InputError, match="does not name its model: pass --model"):
        load_encoder(path)
    with pytest.raises(InputError, match=r"does not fit resnet18 \(missing: backbone.conv1.weight, .*unexpected: "
                                         r"backbone.cls_token, backbone.pos_embed, backbone.patch_embed.proj.weight"):
        load_encoder(path, model="resnet18")
    with pytest.raises(InputError, match=r"other shape \(file vs model\): backbone.pos_embed \(1, 5, 64\) vs \(1, 17, 64\)"):
        load_encoder(path, model="test_vit", img_size=64)
    with pytest.raises(InputError, match="not a training checkpoint .* first keys: encoder.weight"):
        load_encoder({"encoder.weight": torch.zeros(1)})
