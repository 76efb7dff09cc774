"""Schedules, checkpoints, random states, feature extraction and the stops on NaN or inf."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from tiny_models import one_thread  # noqa: F401  (autouse)
from reid.engine import (NonFiniteError, PairModel, build_scheduler, extract_features, load_checkpoint, load_encoder,
                         lr_factor, rng_state, save_checkpoint, set_rng_state, train_one_epoch)
from reid.errors import RunFailure
from reid.losses import ReidLoss
from reid.models import build_model


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
