"""Training one job's encoder: the training data, the Lightning Trainer with its callbacks (resumable
checkpoints, validation, adapter schedules), the fit, the saved adapter and what the fit cost."""

import time
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.data.sources import load_data
from splade_peft.memory import peak_memory_mb, reset_peak_memory, resident_peak_mb
from splade_peft.model.adapters import adapter_callbacks, saved_weights_bytes
from splade_peft.model.variants import SparseEncoder
from splade_peft.records import fingerprint
from splade_peft.training.dataset import training_loader, training_set
from splade_peft.training.module import SpladeModule
from splade_peft.training.resume import ResumableCheckpoint, resume_path
from splade_peft.training.validation import RetrievalValidation

NOTHING_TRAINED = {"train_s": 0.0, "steps": 0, "training_pairs": 0, "adapter_bytes": 0, "memory": {}}


def trains(encoder: SparseEncoder) -> bool:
    return any(p.requires_grad for p in encoder.parameters())


def fit(encoder: SparseEncoder, tokenizer, collection: Collection, cfg: DictConfig, run_dir: Path, lightning_logger) -> dict:
    """Train `encoder` on `collection` as cfg says (resuming from <run_dir>/checkpoints), save its adapter
    to <run_dir>/adapter; return steps, pairs, adapter size, wall time and peak memory of the fit."""
    if not trains(encoder):
        return dict(NOTHING_TRAINED)
    dataset = training_set(collection, cfg)
    loader, sampler = training_loader(dataset, tokenizer, cfg)
    module = SpladeModule(encoder, cfg.loss, cfg.optim, cfg.training.max_nonfinite_batches)
    checkpoint = ResumableCheckpoint(run_dir / "checkpoints", cfg.training.checkpoint_every_n_steps, sampler, cfg.data.batch_size)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer), logger=lightning_logger, default_root_dir=run_dir,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        callbacks=[checkpoint, *validation_callbacks(cfg, tokenizer)] + [
            callback for side in encoder.language_model_encoders() for callback in adapter_callbacks(side.masked_lm)
        ],
    )
    # Lightning keeps the train/eval modes it finds, and the zero-shot pass left the backbone in eval
    # mode: without this, adapter dropout would silently be off.
    encoder.train()
    peak_before = reset_peak_memory()
    started = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=resume_path(checkpoint.folder, training_fingerprint(cfg)), weights_only=True)
    train_s = time.perf_counter() - started
    memory = {"peak_rss_mb": max(peak_before, resident_peak_mb()), **peak_memory_mb("train_")}
    encoder.save(run_dir / "adapter")
    return {"train_s": train_s, "steps": trainer.global_step, "training_pairs": len(dataset),
            "adapter_bytes": saved_weights_bytes(run_dir / "adapter"), "memory": memory,
            "nonfinite_batches": module.nonfinite_batches}


def training_fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint must have been trained with to be resumed (the study bookkeeping aside)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return fingerprint({key: value for key, value in config.items() if key not in ("sweep", "logger")})


def validation_callbacks(cfg: DictConfig, tokenizer) -> list:
    if not cfg.eval.validate_every_n_steps:
        return []
    spec = OmegaConf.merge(cfg.data, {"max_queries": cfg.eval.validation_max_queries,
                                      "max_documents": cfg.eval.validation_max_documents})
    return [RetrievalValidation(
        load_data(spec, cfg.eval.validation_split, cfg), tokenizer, cfg.eval.validate_every_n_steps,
        cfg.model.query_max_length, cfg.model.doc_max_length, cfg.index.quantization, cfg.eval.k,
    )]
