"""Cross-rank gathering with gradients (2 CPU processes, gloo) and the torchrun environment."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reid.distributed import env_from_environment, gather_features
from reid.losses import ReidLoss

BATCH, DIM, WORLD = 4, 8, 2


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(WORLD * BATCH, DIM, generator=generator)
    g = q + 0.5 * torch.randn(WORLD * BATCH, DIM, generator=generator)
    return q, g, torch.arange(WORLD * BATCH)


def _worker(rank: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        q, g, labels = global_batch()
        local = slice(rank * BATCH, (rank + 1) * BATCH)
        q_local = q[local].clone().requires_grad_(True)
        g_local = g[local].clone().requires_grad_(True)
        loss_fn = ReidLoss("infonce+id+triplet", embed_dim=DIM, num_classes=WORLD * BATCH, rank=rank, world_size=WORLD)
        torch.manual_seed(1)
        loss_fn.classifier.reset_parameters()
        loss, parts = loss_fn(q_local, g_local, labels[local])
        loss.backward()
        gathered = gather_features(q_local.detach(), rank, WORLD)
        results[rank] = {"loss": loss.item(), "parts": parts, "grad_q": q_local.grad, "grad_g": g_local.grad,
                         "gathered": gathered, "scale_grad": loss_fn.logit_scale.grad.clone()}
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gathered_losses_of_two_ranks_equal_the_single_process_loss():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(free_port(), results), nprocs=WORLD, join=True)

    q, g, labels = global_batch()
    q.requires_grad_(True)
    g.requires_grad_(True)
    loss_fn = ReidLoss("infonce+id+triplet", embed_dim=DIM, num_classes=WORLD * BATCH)
    torch.manual_seed(1)
    loss_fn.classifier.reset_parameters()
    loss, parts = loss_fn(q, g, labels)
    loss.backward()

    for rank in range(WORLD):
        got = results[rank]
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
