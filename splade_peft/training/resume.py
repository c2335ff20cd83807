"""Training that survives a kill: Lightning's ModelCheckpoint writes <checkpoints>/last.ckpt every N steps,
and the same command resumes from it. Lightning saves the trainable weights, optimizer, scheduler and
loop progress; ResumeState adds what it does not: the position in the epoch's shuffled order and every
process's random-number state, so a resumed run draws the same batches, negatives and dropout masks as an
uninterrupted one. StagedCheckpointIO writes each checkpoint under a temporary name and renames it, so a
kill mid-write leaves the previous one intact.
"""

import json
import logging
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import Sampler

from splade_peft.records import stable_seed, staged
from splade_peft.training.distributed import gathered_objects, process_rank

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.ckpt"
BEST_NAME = "best"  # best.ckpt: the checkpoint with the best validation metric (training.keep_best)
OWNER_NAME = "config_fingerprint.json"


class EpochShuffle(Sampler[int]):
    """A fresh permutation per (seed, epoch) that can start part-way through, for resuming mid-epoch.

    Under DDP each process takes every world_size-th index of the permutation (padded like
    DistributedSampler, so that every process has as many batches). It also hands the epoch to the
    dataset, which re-draws its negatives per epoch: Lightning skips `on_train_epoch_start` when it
    resumes mid-epoch, but it always sets the sampler's epoch.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self.epoch, self.skip = 0, 0
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def resume(self, epoch: int, consumed: int) -> None:
        self.set_epoch(epoch)
        self.skip = consumed

    def __iter__(self):
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch) % 2**63)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        order += order[: len(self) * self.world_size - len(order)]
        skip, self.skip = self.skip, 0
        return iter(order[self.rank::self.world_size][skip:])


def rng_states() -> dict:
    # numpy's state as plain lists: checkpoints load with weights_only=True, which refuses numpy arrays.
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
    }
    if torch.cuda.is_initialized():  # dropout on a GPU draws from the process's device generator, not the CPU one
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class ResumeState(L.Callback):
    """The sampler's position and the RNG states in every checkpoint, restored on resume; trainable weights only.

    Frozen backbone weights are left out of checkpoints: they come back from the model folder.
    """

    def __init__(self, sampler: EpochShuffle | None, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.position = {"epoch": 0, "batches": 0}
        self.rng_to_restore = None
        self.restored = False
        self.resumed_from_step: int | None = None  # the step a resumed fit started from (results.json training)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.restored:
            self.resumed_from_step = trainer.global_step

    def setup(self, trainer, pl_module, stage: str) -> None:
        pl_module.strict_loading = False  # the checkpoint holds only the trainable weights
        if self.sampler is not None:
            self.sampler.shard(trainer.global_rank, trainer.world_size)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # Restored here, not at load time: creating the data iterator in between draws from the global RNG.
        if self.rng_to_restore is not None:
            restore_rng_states(self.rng_to_restore)
            self.rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        batches = batch_idx + 1
        finished_epoch = batches >= trainer.num_training_batches
        self.position = {"epoch": trainer.current_epoch + finished_epoch, "batches": 0 if finished_epoch else batches}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        trainable = {name for name, parameter in pl_module.named_parameters() if parameter.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def state_dict(self) -> dict:
        # Every process builds the checkpoint and rank zero writes it: it holds each process's RNG.
        return {"position": dict(self.position), "rng": gathered_objects(rng_states())}

    def load_state_dict(self, state: dict) -> None:
        self.restored = True
        self.position = state["position"]
        if self.sampler is not None:  # a mixture loader restarts its epoch: resumed, but not batch-exact
            self.sampler.resume(self.position["epoch"], self.position["batches"] * self.batch_size)
        per_process = state["rng"]
        self.rng_to_restore = per_process[min(process_rank(), len(per_process) - 1)]  # fewer devices than before: rank 0's


class StagedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through a temporary file renamed into place."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with staged(Path(path)) as staging:
            super().save_checkpoint(checkpoint, staging, storage_options)
        log.info("checkpoint at step %d: %s", checkpoint.get("global_step", -1), path)


def resume_path(folder: Path, config_fingerprint: str) -> Path | None:
    """The checkpoint to resume from: only one written by a job with this very config; otherwise start afresh."""
    folder = Path(folder)
    owner = folder / OWNER_NAME
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.exists() and owner.exists() and json.loads(owner.read_text()).get("config") == config_fingerprint:
        log.warning("resuming training from %s", checkpoint)
        return checkpoint
    for stale in folder.glob("*.ckpt*"):
        stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps({"config": config_fingerprint}) + "\n")
    return None
