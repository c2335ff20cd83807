"""FLOPS under data parallelism: two gloo processes on CPU, each with half of the batch, give the
regulariser value and the DDP-averaged gradient of one process holding the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from splade_peft.training.regularizers import flops

FEATURES, VOCABULARY, BATCH = 4, 6, 8


def fixed_inputs() -> torch.Tensor:
    return torch.randn(BATCH, FEATURES, generator=torch.Generator().manual_seed(1))


def projection() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(FEATURES, VOCABULARY)


def flops_and_gradient(layer: nn.Module, inputs: torch.Tensor) -> tuple[float, torch.Tensor]:
    value = flops(torch.relu(layer(inputs)))
    value.backward()
    weight = layer.module.weight if hasattr(layer, "module") else layer.weight
    return value.item(), weight.grad.clone()


def worker(rank: int, world_size: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        shard = fixed_inputs().chunk(world_size)[rank]
        value, gradient = flops_and_gradient(nn.parallel.DistributedDataParallel(projection()), shard)
        torch.save({"value": value, "gradient": gradient}, os.path.join(results, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_processes_regularise_like_one_with_the_whole_batch(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    value, gradient = flops_and_gradient(projection(), fixed_inputs())
    for rank in range(2):
        result = torch.load(tmp_path / f"{rank}.pt")
        assert result["value"] == pytest.approx(value, rel=1e-6)
        torch.testing.assert_close(result["gradient"], gradient)
    # The per-process batch alone would regularise something else: the gather is what makes them equal.
    local_value = flops(torch.relu(projection()(fixed_inputs().chunk(2)[0]))).item()
    assert local_value != pytest.approx(value, rel=1e-3)
