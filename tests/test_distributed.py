"""Cross-rank gathering with gradients and DDP steps, on 2 CPU processes (gloo); the torchrun environment."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from reid.distributed import env_from_environment, gather_features
from reid.engine import PairModel, train_one_epoch
from reid.losses import ReidLoss
from reid.models import build_model

BATCH, DIM, WORLD = 4, 8, 2


def embedding_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(WORLD * BATCH, DIM, generator=generator)
    g = q + 0.5 * torch.randn(WORLD * BATCH, DIM, generator=generator)
    return q, g, torch.arange(WORLD * BATCH)


def seeded_loss(rank: int = 0, world_size: int = 1) -> ReidLoss:
    torch.manual_seed(1)
    return ReidLoss("infonce+id+triplet", embed_dim=DIM, num_classes=WORLD * BATCH, rank=rank, world_size=world_size)


def tiny_model(rank: int = 0, world_size: int = 1) -> PairModel:
    torch.manual_seed(0)
    encoder = build_model({"model": "test_vit", "img_size": 32})
    return PairModel(encoder, ReidLoss("infonce+id", embed_dim=encoder.embed_dim, num_classes=WORLD * BATCH,
                                       rank=rank, world_size=world_size))


def image_batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(WORLD * BATCH, 3, 32, 32, generator=generator),
             torch.randn(WORLD * BATCH, 3, 32, 32, generator=generator), torch.randperm(WORLD * BATCH)) for _ in range(2)]


def _worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        local = slice(rank * BATCH, (rank + 1) * BATCH)
        # 1. the losses of this rank's half, gathered
        q, g, labels = embedding_batch()
        q_local = q[local].clone().requires_grad_(True)
        g_local = g[local].clone().requires_grad_(True)
        loss_fn = seeded_loss(rank, WORLD)
        loss, parts = loss_fn(q_local, g_local, labels[local])
        loss.backward()
        out = {"loss": loss.item(), "parts": parts, "grad_q": q_local.grad, "grad_g": g_local.grad,
               "gathered": gather_features(q_local.detach(), rank, WORLD), "scale_grad": loss_fn.logit_scale.grad.clone()}
        # 2. two DDP training steps on this rank's halves of two batches
        model = tiny_model(rank, WORLD)
        batches = [(q[local], g[local], labels[local]) for q, g, labels in image_batches()]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        train_one_epoch(DistributedDataParallel(model), batches, optimizer, None, torch.device("cpu"), epoch=1, verbose=False)
        out["state"] = {name: value.detach().clone() for name, value in model.state_dict().items()}
        results[rank] = out
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks() -> dict:
    """What each of 2 gloo processes computed (started once for the tests below). Forked, not spawned: a
    spawned child imports torch and the package again (seconds); this process runs torch on one thread
    (tests/conftest.py), so there is no thread pool for a fork to break."""
    manager = mp.get_context("fork").Manager()
    results = manager.dict()
    mp.start_processes(_worker, args=(free_port(), results), nprocs=WORLD, join=True, start_method="fork")
    return {rank: results[rank] for rank in range(WORLD)}


def test_gathered_losses_of_two_ranks_equal_the_single_process_loss(two_ranks):
    q, g, labels = embedding_batch()
    q.requires_grad_(True)
    g.requires_grad_(True)
    loss_fn = seeded_loss()
    loss, parts = loss_fn(q, g, labels)
    loss.backward()
    for rank, got in two_ranks.items():
        assert torch.equal(got["gathered"], q.detach())  # rank order
        assert got["loss"] == pytest.approx(loss.item(), rel=1e-6)
        for name, value in parts.items():
            assert got["parts"][name] == pytest.approx(value, rel=1e-6)
        # Every rank computes the global loss; its own rows receive the gradient of all ranks, i.e.
        # world_size times d(loss)/d(rows); DDP's averaging of parameter gradients divides it back.
        local = slice(rank * BATCH, (rank + 1) * BATCH)
        torch.testing.assert_close(got["grad_q"] / WORLD, q.grad[local], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["grad_g"] / WORLD, g.grad[local], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["scale_grad"], loss_fn.logit_scale.grad, rtol=1e-5, atol=1e-7)


def test_ddp_steps_on_two_ranks_equal_single_process_steps_on_the_whole_batch(two_ranks):
    model = tiny_model()
    start = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_one_epoch(model, image_batches(), optimizer, None, torch.device("cpu"), epoch=1, verbose=False)
    trained = model.state_dict()
    assert sum(not torch.equal(trained[name], start[name]) for name in start) > 0.9 * len(start)
    for got in two_ranks.values():
        for name, value in trained.items():
            torch.testing.assert_close(got["state"][name], value, rtol=1e-4, atol=1e-6)


def test_environment_of_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    single = env_from_environment()
    assert (single.rank, single.world_size, single.is_main, single.is_distributed) == (0, 1, True, False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = env_from_environment()
    assert (env.rank, env.world_size, env.local_rank, env.is_main, env.is_distributed) == (3, 4, 1, False, True)
