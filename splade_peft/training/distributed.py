"""Data-parallel training (trainer.devices > 1): which process this is, the documents of every process
gathered for global in-batch negatives, and the check that every process trains the same job.

The job's DDP strategy (ddp_launch.py) starts one process per extra device on this job's overrides, with
LOCAL_RANK set; those processes train beside rank zero and write nothing (rank zero writes every file).
"""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_autograd
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from splade_peft.errors import ConfigError


def is_rank_zero() -> bool:
    """True in the process that writes the job's files: the only one without DDP, rank 0 with it.

    Lightning sets `rank_zero_only.rank` from LOCAL_RANK/RANK when imported and again when DDP starts.
    """
    return rank_zero_only.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_documents(documents: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every process's documents stacked in rank order, where this process's rows start).

    The all-gather keeps the gradient: each process's loss reaches the documents of all the others, and
    DDP's averaging then gives the gradient of one process holding the global batch. Every process must
    hold the same number of documents (EpochShuffle gives every rank as many batches of the same size).
    """
    if not is_distributed():
        return documents, 0
    gathered = distributed_autograd.all_gather(documents.contiguous())
    return torch.cat(gathered), dist.get_rank() * documents.shape[0]


def all_processes_agree(flag: torch.Tensor) -> torch.Tensor:
    """`flag` (a 0-d bool tensor) and-ed over processes, so that all of them take the same branch."""
    if not is_distributed():
        return flag
    as_int = flag.to(torch.int32)
    dist.all_reduce(as_int, op=dist.ReduceOp.MIN)
    return as_int.bool()


def gathered_objects(value) -> list:
    """[value of rank 0, value of rank 1, ...] (just [value] without DDP)."""
    if not is_distributed():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


class SameJobOnEveryProcess(Callback):
    """Stops a fit before its first step unless every process holds this job's training fingerprint: a process
    started on another job's config (another grid point) would train a different model in lockstep, or hang.
    `processes` is how many trained the job (1 without DDP): results.json's training.processes."""

    def __init__(self, config_fingerprint: str):
        self.config_fingerprint = config_fingerprint
        self.processes = 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        fingerprints = gathered_objects(self.config_fingerprint)
        others = [rank for rank, fingerprint in enumerate(fingerprints) if fingerprint != fingerprints[0]]
        if others:
            raise ConfigError("trainer.devices", f"process(es) of rank {others} hold another config than rank 0",
                              "start every process of a job on that job's overrides (python -m splade_peft "
                              "<its overrides> hydra.run.dir=<its folder>), as the job's DDP strategy does")
        self.processes = len(fingerprints)
