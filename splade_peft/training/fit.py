"""Training one job's encoder on its TrainingData: the Lightning Trainer with its callbacks (checkpoints,
resume state, the regularisers' warm-up, validation with best-checkpoint selection and early stopping,
learning-rate logging, adapter schedules), the fit, the saved adapter and what the fit cost."""

import logging
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from splade_peft.memory import peak_memory_mb, reset_peak_memory, resident_peak_mb
from splade_peft.model.adapters import adapter_callbacks, saved_weights_bytes
from splade_peft.model.encoder import compiled
from splade_peft.model.variants import SparseEncoder
from splade_peft.progress import interactive
from splade_peft.training.collapse import CollapseStop
from splade_peft.training.datamodule import TrainingData
from splade_peft.training.ddp_launch import data_parallel_strategy
from splade_peft.training.distributed import SameJobOnEveryProcess, is_rank_zero
from splade_peft.training.module import SpladeModule, ValidatedSpladeModule
from splade_peft.training.regularizers import RegularizerWarmup
from splade_peft.training.preemption import CheckpointOnPreemption, cluster_plugins
from splade_peft.training.resume import BEST_NAME, CHECKPOINT_NAME, ResumeState, StagedCheckpointIO, resume_path


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


def fit(encoder: SparseEncoder, data: TrainingData, loss_cfg: DictConfig, optim_cfg: DictConfig, trainer_cfg: DictConfig,
        training_cfg: DictConfig, run_dir: Path, lightning_logger, *, selection_metric: str, config_fingerprint: str) -> dict:
    """Train `encoder` on `data` with the loss, optim, trainer and training sections, resuming from
    <run_dir>/checkpoints when they were written by a job of this `config_fingerprint`; save its adapter to
    <run_dir>/adapter (with training.keep_best, the one validated best on val/<selection_metric>); return
    steps, pairs, adapter size, wall time and peak memory of the fit. Under DDP only rank zero saves; the
    others return after training with the steps alone."""
    if not trains(encoder):
        return dict(NOTHING_TRAINED)
    data.setup("fit")
    monitor = monitored(selection_metric)
    arguments = (encoder, loss_cfg, optim_cfg, training_cfg.max_nonfinite_batches)
    module = ValidatedSpladeModule(*arguments, data.validation) if data.validation else SpladeModule(*arguments)
    folder = run_dir / "checkpoints"
    checkpoints = checkpoint_callbacks(training_cfg, folder, monitor)
    same_job = SameJobOnEveryProcess(config_fingerprint)
    resume_state = ResumeState(data.sampler, data.batch_size)
    warmup = RegularizerWarmup(loss_cfg)
    trainer = L.Trainer(
        **lightning_arguments(trainer_cfg), logger=lightning_logger, default_root_dir=run_dir,
        plugins=[StagedCheckpointIO(), *cluster_plugins()], enable_model_summary=False, enable_progress_bar=interactive(),
        # EpochShuffle shards the training set itself (it must know its position to resume), and every
        # process validates on the whole validation split.
        use_distributed_sampler=False,
        callbacks=[same_job, resume_state, warmup, *collapse_stop(encoder, training_cfg, warmup), *checkpoints,
                   *monitoring_callbacks(training_cfg, monitor, lightning_logger)]
        + [callback for side in encoder.language_model_encoders() for callback in adapter_callbacks(side.masked_lm)]
        # After the callbacks above (Lightning runs ModelCheckpoint later still): it saves the state they leave.
        + [CheckpointOnPreemption(folder / CHECKPOINT_NAME)],
        **validation_schedule(data.validate_every_n_steps, trainer_cfg.accumulate_grad_batches),
    )
    # Lightning keeps the train/eval modes it finds, and the zero-shot pass left the backbone in eval
    # mode: without this, adapter dropout would silently be off.
    encoder.train()
    checkpoint_backbones(encoder, trainer_cfg)
    compile_backbones(encoder, trainer_cfg)
    peak_before = reset_peak_memory()
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume_path(folder, config_fingerprint), weights_only=True)
    train_s = time.perf_counter() - started
    training = {"train_s": train_s, "steps": trainer.global_step, "training_pairs": len(data.dataset),
                "nonfinite_batches": module.nonfinite_batches, "processes": same_job.processes}
    if resume_state.resumed_from_step is not None:
        training["resumed_from_step"] = resume_state.resumed_from_step
    if not is_rank_zero():
        return training
    if training_cfg.keep_best:
        training["kept"] = load_best(module, checkpoints[-1])
    memory = {"peak_rss_mb": max(peak_before, resident_peak_mb()), **peak_memory_mb("train_")}
    encoder.save(run_dir / "adapter")
    return {**training, "adapter_bytes": saved_weights_bytes(run_dir / "adapter"), "memory": memory}


def monitored(metric: str) -> str:
    """The logged validation metric that selects the best checkpoint and stops early (the study's objective)."""
    return f"val/{metric}"


def collapse_stop(encoder: SparseEncoder, training_cfg: DictConfig, warmup: RegularizerWarmup) -> list[CollapseStop]:
    """The collapse stop, with training.collapse_stop.enabled, for an encoder with sparse vectors (a dense
    encoder's embeddings are meant to fill every dimension)."""
    settings = training_cfg.collapse_stop
    return [CollapseStop(settings.min_nonzeros, settings.max_fill, warmup)] if settings.enabled and encoder.is_sparse else []


def checkpoint_callbacks(training_cfg: DictConfig, folder: Path, monitor: str) -> list[ModelCheckpoint]:
    """last.ckpt every training.checkpoint_every_n_steps steps; with training.keep_best, best.ckpt (highest
    `monitor`) last in the list."""
    last = ModelCheckpoint(folder, save_last=True, save_top_k=0, every_n_train_steps=training_cfg.checkpoint_every_n_steps,
                           enable_version_counter=False)
    if not training_cfg.keep_best:
        return [last]
    best = ModelCheckpoint(folder, filename=BEST_NAME, monitor=monitor, mode="max", save_top_k=1,
                           enable_version_counter=False)
    return [last, best]


def monitoring_callbacks(training_cfg: DictConfig, monitor: str, lightning_logger) -> list:
    callbacks = [LearningRateMonitor(logging_interval="step")] if lightning_logger else []
    if training_cfg.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=training_cfg.early_stopping_patience))
    return callbacks


def load_best(module: SpladeModule, best: ModelCheckpoint) -> dict:
    """Put the best validated checkpoint's trainable weights back into `module`; its step and score."""
    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return {"step": checkpoint["global_step"], best.monitor: float(best.best_model_score)}


def validation_schedule(every_n_steps: int, accumulate_grad_batches: int) -> dict:
    """Trainer arguments: validation every `every_n_steps` optimizer steps, counted across epochs
    (check_val_every_n_epoch=None), or none at all (0)."""
    if not every_n_steps:
        return {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    return {"val_check_interval": every_n_steps * accumulate_grad_batches, "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0}


def lightning_arguments(trainer_cfg: DictConfig) -> dict:
    """trainer.* as lightning.Trainer takes it: every key but the project's own `compile`, `gradient_checkpointing`
    and `ddp_timeout_min`, and for more than one device the job's DDP strategy (its processes run this job; its
    timeout that key)."""
    arguments = OmegaConf.to_container(trainer_cfg)
    for own_key in ("compile", "gradient_checkpointing"):
        arguments.pop(own_key)
    timeout_min = arguments.pop("ddp_timeout_min")
    return {**arguments, **data_parallel_strategy(arguments, timeout_min)}


def checkpoint_backbones(encoder, trainer_cfg: DictConfig) -> None:
    """trainer.gradient_checkpointing=true: every backbone the encoder trains keeps only its layers' inputs and
    recomputes their activations in backward (Hugging Face's checkpointing, non-reentrant), trading about a
    third more compute for activation memory. For a text model transformers also makes the input embeddings'
    output require grad, which an adapter on a frozen base needs once layers are recomputed."""
    if trainer_cfg.gradient_checkpointing:
        for side in encoder.language_model_encoders():
            if trains(side):
                side.masked_lm.activation_checkpointing_enable({"use_reentrant": False})


def compile_backbones(encoder, trainer_cfg: DictConfig) -> None:
    """trainer.compile=true: torch.compile every backbone the encoder trains (in place; state dict names kept)."""
    if trainer_cfg.compile:
        for side in encoder.language_model_encoders():
            compiled(side)
