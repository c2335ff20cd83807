"""Data-parallel training on CPU (gloo): global in-batch negatives across two processes give the loss and
gradient of one process holding the global batch; each process draws its own share of every epoch; processes
holding different configs stop before training; the job's DDP strategy waits trainer.ddp_timeout_min and starts
its extra processes on the job's own overrides; a smoke job with trainer.devices=2 trains on two processes and
writes one result."""

import json
import os
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict
from torch import nn

from tests.helpers import CONF, composed, run_cli
from splade_peft.errors import ConfigError
from splade_peft.training.ddp_launch import JobDDPStrategy, job_command
from splade_peft.training.distributed import SameJobOnEveryProcess, gather_documents
from splade_peft.training.fit import lightning_arguments
from splade_peft.training.losses import ranking_loss
from splade_peft.training.resume import EpochShuffle

FEATURES, VOCABULARY, QUERIES, DOCS_PER_QUERY = 4, 6, 4, 2
LOSS = OmegaConf.create({"weights": {"contrastive": 1.0}, "in_batch": "global", "temperature": 1.0})


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(QUERIES, FEATURES, generator=generator), torch.randn(QUERIES * DOCS_PER_QUERY, FEATURES, generator=generator)


def projection() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(FEATURES, VOCABULARY)


def loss_and_gradient(layer: nn.Module, queries: torch.Tensor, documents: torch.Tensor) -> tuple[float, torch.Tensor]:
    query_vectors, document_vectors = torch.relu(layer(queries)), torch.relu(layer(documents))
    pool = gather_documents(document_vectors)
    loss = ranking_loss(LOSS, query_vectors, document_vectors, DOCS_PER_QUERY, None, pool)["total"]
    loss.backward()
    weight = layer.module.weight if hasattr(layer, "module") else layer.weight
    return loss.item(), weight.grad.clone()


def worker(rank: int, world_size: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        queries, documents = fixed_batch()
        shard = (queries.chunk(world_size)[rank], documents.chunk(world_size)[rank])
        value, gradient = loss_and_gradient(nn.parallel.DistributedDataParallel(projection()), *shard)
        torch.save({"value": value, "gradient": gradient}, os.path.join(results, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_global_negatives_on_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    value, gradient = loss_and_gradient(projection(), *fixed_batch())
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    # Each process's loss is the mean over its queries: their mean is the global batch's loss.
    assert sum(r["value"] for r in results) / 2 == pytest.approx(value, rel=1e-6)
    for result in results:  # DDP averages the gradients, which the all-gather carried across processes
        torch.testing.assert_close(result["gradient"], gradient)
    # Negatives from the process's own half alone would give another loss: the gather is what matters.
    queries, documents = fixed_batch()
    local = ranking_loss(OmegaConf.merge(LOSS, {"in_batch": True}), torch.relu(projection()(queries[:2])),
                         torch.relu(projection()(documents[:4])), DOCS_PER_QUERY, None)["total"].item()
    assert local != pytest.approx(results[0]["value"], rel=1e-3)


def test_each_process_draws_its_own_equal_share_of_the_epoch():
    dataset = list(range(11))
    shards = []
    for rank in range(2):
        sampler = EpochShuffle(dataset, seed=3)
        sampler.shard(rank, 2)
        shards.append(list(sampler))
    assert len(shards[0]) == len(shards[1]) == 6  # padded like DistributedSampler: as many batches everywhere
    assert set(shards[0]) | set(shards[1]) == set(dataset)
    single = EpochShuffle(dataset, seed=3)
    assert sorted(set(shards[0]) - set(shards[1])) != []  # the shares differ
    assert [index for pair in zip(*shards) for index in pair][:11] == list(single)



def check_fingerprints(rank: int, world_size: int, init_file: str, results: str, fingerprints: list[str]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        same_job = SameJobOnEveryProcess(fingerprints[rank])
        try:
            same_job.setup(None, None, "fit")
            outcome = same_job.processes
        except ConfigError as error:
            outcome = str(error)
        torch.save(outcome, os.path.join(results, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fingerprints,expected", [(["job-a", "job-a"], 2), (["job-a", "job-b"], "rank [1]")])
def test_processes_holding_another_config_than_rank_zero_stop_before_training(tmp_path, fingerprints, expected):
    mp.spawn(check_fingerprints, args=(2, str(tmp_path / "init"), str(tmp_path), fingerprints), nprocs=2, join=True)
    outcomes = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    if expected == 2:
        assert outcomes == [2, 2]
    else:  # every process stops, not only the odd one: none is left waiting in a collective
        assert all("config key 'trainer.devices'" in outcome and expected in outcome for outcome in outcomes)


def test_more_than_one_device_gets_the_job_ddp_strategy_with_the_configured_timeout():
    arguments = lightning_arguments(composed("trainer.devices=2", "trainer.ddp_timeout_min=90").trainer)
    assert isinstance(arguments["strategy"], JobDDPStrategy) and "ddp_timeout_min" not in arguments
    assert arguments["strategy"]._timeout == timedelta(minutes=90)  # Lightning keeps it for init_process_group
    assert "strategy" not in lightning_arguments(composed("trainer.devices=1").trainer)
    # A strategy the user names is theirs (its processes are not started by re-running the command line).
    assert lightning_arguments(composed("trainer.devices=2", "+trainer.strategy=ddp_spawn").trainer)["strategy"] == "ddp_spawn"


@pytest.fixture
def multirun_job(tmp_path):
    """HydraConfig as a sweep's job `lora.r=1` sees it, in a folder whose name needs quoting on a command line."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=smoke", "trainer.devices=2", "lora.r=1"],
                      return_hydra_config=True)
    folder = tmp_path / "eval.zero_shot=false,lora.r=1,trainer.devices=2"
    with open_dict(cfg):
        cfg.hydra.overrides.hydra = ["hydra.sweep.dir=/x", "hydra/launcher=basic", "hydra.job.chdir=false", "hydra.mode=MULTIRUN"]
        cfg.hydra.runtime.output_dir = str(folder)
    HydraConfig.instance().set_config(cfg)
    yield folder
    HydraConfig.instance().cfg = None


def test_an_extra_process_runs_its_job_alone_in_the_job_folder(multirun_job, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["splade_peft", "-m", "experiment=smoke", "trainer.devices=2", "lora.r=1,4",
                                      "--config-dir", "mine"])
    command = job_command()
    assert command[:3] == [sys.executable, "-m", "splade_peft"] and "-m" not in command[3:]
    overrides = {override.key_or_group: override for override in OverridesParser.create().parse_overrides(command[4:])}
    assert command[3] == "--config-dir=mine"
    assert overrides["lora.r"].value() == 1 and overrides["hydra.job.chdir"].value() is False
    assert overrides["hydra.run.dir"].value() == str(multirun_job)  # quoted: the name holds '=' and ','
    assert overrides["hydra.output_subdir"].value() is None and overrides["hydra/job_logging"].value() == "stdout"
    assert not {"hydra.sweep.dir", "hydra/launcher", "hydra.mode"} & set(overrides)


@pytest.mark.slow
def test_smoke_job_on_two_processes_writes_one_result(tmp_path):
    done = run_cli(tmp_path / "job", "experiment=smoke", "trainer.devices=2", "loss.in_batch=global",
                   "eval.zero_shot=false", "trainer.max_steps=4", "logger=csv", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "job" / "results.json").read_text())
    assert record["status"] == "completed" and record["training"]["steps"] == 4
    assert 0 <= record["metrics"]["average"]["ndcg@10"] <= 1
    assert sorted(p.name for p in (tmp_path / "job" / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]
    assert not list((tmp_path / "job").rglob(".*.tmp"))  # no staging left behind by a second writer
