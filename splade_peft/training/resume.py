"""Training that survives a kill: a checkpoint every N steps, and the same command resumes from the last one.

A checkpoint holds what Lightning saves (trainable weights, optimizer, scheduler, loop progress) plus what it
does not: the position in the epoch's shuffled order and the random-number state, so a resumed run draws the
same batches, negatives and dropout masks as an uninterrupted one.
"""

import json
import logging
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler

from splade_peft.records import stable_seed, staged

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.ckpt"
OWNER_NAME = "config_fingerprint.json"


class EpochShuffle(Sampler[int]):
    """A fresh permutation per (seed, epoch) that can start part-way through, for resuming mid-epoch.

    It also hands the epoch to the dataset, which re-draws its negatives per epoch: Lightning skips
    `on_train_epoch_start` when it resumes mid-epoch, but it always sets the sampler's epoch.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return len(self.dataset)

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
        skip, self.skip = self.skip, 0
        return iter(order[skip:])


def rng_states() -> dict:
    # numpy's state as plain lists: checkpoints load with weights_only=True, which refuses numpy arrays.
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))


class ResumableCheckpoint(L.Callback):
    """Saves `<folder>/last.ckpt` every `every_n_steps` optimizer steps and when training ends.

    The checkpoint is written under a temporary name and renamed, so a kill mid-write leaves the previous
    one intact. Frozen backbone weights are left out: they come back from the model folder.
    """

    def __init__(self, folder: Path, every_n_steps: int, sampler: EpochShuffle | None, batch_size: int):
        self.folder, self.every_n_steps = Path(folder), every_n_steps
        self.sampler, self.batch_size = sampler, batch_size
        self.position = {"epoch": 0, "batches": 0}
        self.rng_to_restore = None

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def setup(self, trainer, pl_module, stage: str) -> None:
        # The checkpoint holds only the trainable weights (see on_save_checkpoint).
        pl_module.strict_loading = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # Restored here, not at load time: creating the data iterator in between draws from the global RNG.
        if self.rng_to_restore is not None:
            restore_rng_states(self.rng_to_restore)
            self.rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        batches = batch_idx + 1
        finished_epoch = batches >= trainer.num_training_batches
        self.position = {"epoch": trainer.current_epoch + finished_epoch, "batches": 0 if finished_epoch else batches}
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != getattr(self, "saved_step", None):
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != getattr(self, "saved_step", None):
            self.save(trainer)

    def save(self, trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with staged(self.path) as staging:
            trainer.save_checkpoint(staging, weights_only=False)
        self.saved_step = trainer.global_step
        log.info("checkpoint at step %d: %s", trainer.global_step, self.path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        trainable = {name for name, parameter in pl_module.named_parameters() if parameter.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def state_dict(self) -> dict:
        return {"position": dict(self.position), "rng": rng_states()}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]
        if self.sampler is not None:  # a mixture loader restarts its epoch: resumed, but not batch-exact
            self.sampler.resume(self.position["epoch"], self.position["batches"] * self.batch_size)
        self.rng_to_restore = state["rng"]


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
