"""Training one job's encoder: the training data, the Lightning Trainer with its callbacks (checkpoints,
resume state, validation with best-checkpoint selection and early stopping, learning-rate logging,
adapter schedules), the fit, the saved adapter and what the fit cost."""

import logging
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.data.sources import load_data
from splade_peft.errors import ConfigError
from splade_peft.memory import peak_memory_mb, reset_peak_memory, resident_peak_mb
from splade_peft.model.adapters import adapter_callbacks, saved_weights_bytes
from splade_peft.model.encoder import compiled
from splade_peft.model.variants import SparseEncoder
from splade_peft.progress import interactive
from splade_peft.records import fingerprint
from splade_peft.training.dataset import training_loader, training_set
from splade_peft.training.distributed import is_rank_zero
from splade_peft.training.module import SpladeModule, ValidatedSpladeModule
from splade_peft.training.resume import BEST_NAME, ResumeState, StagedCheckpointIO, resume_path
from splade_peft.training.validation import RetrievalValidation


class DropLitLoggerTip(logging.Filter):
    """Lightning advertises its cloud logger in every Trainer it builds: one line of noise per job log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(DropLitLoggerTip())
# Lightning 2.x flattens batches with torch's LeafSpec, which newer torch deprecates: a warning per job, no effect.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

NOTHING_TRAINED = {"train_s": 0.0, "steps": 0, "training_pairs": 0, "adapter_bytes": 0, "memory": {}}


def trains(encoder: SparseEncoder) -> bool:
    return any(p.requires_grad for p in encoder.parameters())


def fit(encoder: SparseEncoder, tokenizer, collection: Collection, cfg: DictConfig, run_dir: Path, lightning_logger) -> dict:
    """Train `encoder` on `collection` as cfg says (resuming from <run_dir>/checkpoints), save its adapter
    to <run_dir>/adapter (the best validated one with training.keep_best); return steps, pairs, adapter
    size, wall time and peak memory of the fit. Under DDP only rank zero saves; the others return after
    training with the steps alone."""
    if not trains(encoder):
        return dict(NOTHING_TRAINED)
    dataset = training_set(collection, cfg)
    loader, sampler = training_loader(dataset, tokenizer, cfg)
    validation = retrieval_validation(cfg, tokenizer)
    module = (ValidatedSpladeModule(encoder, cfg.loss, cfg.optim, cfg.training.max_nonfinite_batches, validation)
              if validation else SpladeModule(encoder, cfg.loss, cfg.optim, cfg.training.max_nonfinite_batches))
    folder = run_dir / "checkpoints"
    checkpoints = checkpoint_callbacks(cfg, folder)
    trainer = L.Trainer(
        **lightning_arguments(cfg.trainer), logger=lightning_logger, default_root_dir=run_dir,
        plugins=[StagedCheckpointIO()], enable_model_summary=False, enable_progress_bar=interactive(),
        # EpochShuffle shards the training set itself (it must know its position to resume), and every
        # process validates on the whole validation split.
        use_distributed_sampler=False,
        callbacks=[ResumeState(sampler, cfg.data.batch_size), *checkpoints, *monitoring_callbacks(cfg, lightning_logger)]
        + [callback for side in encoder.language_model_encoders() for callback in adapter_callbacks(side.masked_lm)],
        **validation_schedule(cfg),
    )
    if sampler is None and trainer.world_size > 1:
        raise ConfigError("data.mixture", "is not split across devices", "train a mixture with trainer.devices=1")
    # Lightning keeps the train/eval modes it finds, and the zero-shot pass left the backbone in eval
    # mode: without this, adapter dropout would silently be off.
    encoder.train()
    compile_backbones(encoder, cfg.trainer)
    peak_before = reset_peak_memory()
    started = time.perf_counter()
    trainer.fit(module, loader, validation.dataloader() if validation else None,
                ckpt_path=resume_path(folder, training_fingerprint(cfg)), weights_only=True)
    train_s = time.perf_counter() - started
    training = {"train_s": train_s, "steps": trainer.global_step, "training_pairs": len(dataset),
                "nonfinite_batches": module.nonfinite_batches}
    if not is_rank_zero():
        return training
    if cfg.training.keep_best:
        training["kept"] = load_best(module, checkpoints[-1])
    memory = {"peak_rss_mb": max(peak_before, resident_peak_mb()), **peak_memory_mb("train_")}
    encoder.save(run_dir / "adapter")
    return {**training, "adapter_bytes": saved_weights_bytes(run_dir / "adapter"), "memory": memory}


def training_fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint must have been trained with to be resumed (the study bookkeeping aside)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return fingerprint({key: value for key, value in config.items() if key not in ("sweep", "logger")})


def monitored(cfg: DictConfig) -> str:
    """The validation metric that selects the best checkpoint and stops early: the study's objective."""
    return f"val/{cfg.sweep.metric}"


def checkpoint_callbacks(cfg: DictConfig, folder: Path) -> list[ModelCheckpoint]:
    """last.ckpt every training.checkpoint_every_n_steps steps; with training.keep_best, best.ckpt last in the list."""
    last = ModelCheckpoint(folder, save_last=True, save_top_k=0, every_n_train_steps=cfg.training.checkpoint_every_n_steps,
                           enable_version_counter=False)
    if not cfg.training.keep_best:
        return [last]
    best = ModelCheckpoint(folder, filename=BEST_NAME, monitor=monitored(cfg), mode="max", save_top_k=1,
                           enable_version_counter=False)
    return [last, best]


def monitoring_callbacks(cfg: DictConfig, lightning_logger) -> list:
    callbacks = [LearningRateMonitor(logging_interval="step")] if lightning_logger else []
    if cfg.training.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitored(cfg), mode="max", patience=cfg.training.early_stopping_patience))
    return callbacks


def load_best(module: SpladeModule, best: ModelCheckpoint) -> dict:
    """Put the best validated checkpoint's trainable weights back into `module`; its step and score."""
    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return {"step": checkpoint["global_step"], best.monitor: float(best.best_model_score)}


def validation_schedule(cfg: DictConfig) -> dict:
    """Trainer arguments: validation every eval.validate_every_n_steps optimizer steps, counted across
    epochs (check_val_every_n_epoch=None), or none at all."""
    every = cfg.eval.validate_every_n_steps
    if not every:
        if cfg.training.keep_best or cfg.training.early_stopping_patience:
            raise ConfigError("eval.validate_every_n_steps", "is 0, and training.keep_best/early_stopping_patience "
                              "need validation", "set eval.validate_every_n_steps >= 1")
        return {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    return {"val_check_interval": every * cfg.trainer.get("accumulate_grad_batches", 1),
            "check_val_every_n_epoch": None, "num_sanity_val_steps": 0}


def retrieval_validation(cfg: DictConfig, tokenizer) -> RetrievalValidation | None:
    if not cfg.eval.validate_every_n_steps:
        return None
    spec = OmegaConf.merge(cfg.data, {"max_queries": cfg.eval.validation_max_queries,
                                      "max_documents": cfg.eval.validation_max_documents})
    return RetrievalValidation(
        load_data(spec, cfg.eval.validation_split, cfg), tokenizer, cfg.model.query_max_length, cfg.model.doc_max_length,
        cfg.index.quantization, cfg.eval.k, cfg.index.tokens_per_batch, cfg.index.max_batch_size,
    )


def lightning_arguments(trainer_cfg: DictConfig) -> dict:
    """trainer.* as lightning.Trainer takes it: every key but the project's own `compile`."""
    arguments = OmegaConf.to_container(trainer_cfg)
    arguments.pop("compile", None)
    return arguments


def compile_backbones(encoder, trainer_cfg: DictConfig) -> None:
    """trainer.compile=true: torch.compile every backbone the encoder trains (in place; state dict names kept)."""
    if trainer_cfg.get("compile"):
        for side in encoder.language_model_encoders():
            compiled(side)
