"""Validation through Lightning: val/<metric> every N steps from validation_step, the best validated
checkpoint kept by ModelCheckpoint and put back by load_best, the learning rate logged, the training RNG
untouched by validating; the kept model's figure on the split (the job's dev figure) measured after training."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

from tests.helpers import LORA, LOSS, OPTIM, tiny_tokenizer
from splade_peft.data.collection import Collection
from splade_peft.data.pairs import TrainingCollator
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.training.fit import checkpoint_callbacks, load_best, monitoring_callbacks, validation_schedule
from splade_peft.training.module import SpladeModule, ValidatedSpladeModule
from splade_peft.training.resume import ResumeState, StagedCheckpointIO
from splade_peft.training.validation import RetrievalValidation, selection_metrics

CORPUS = {"d0": "the cat sat on the mat", "d1": "dog", "d2": "blue car on the road", "d3": "sun moon star"}
COLLECTION = Collection("toy", "dev", CORPUS, {"q0": "cat mat", "q1": "moon star"}, {"q0": {"d0": 1}, "q1": {"d3": 1}}, "toy")
TRAINING = OmegaConf.create({"checkpoint_every_n_steps": 2, "keep_best": True, "early_stopping_patience": 0})
MONITOR = "val/ndcg@10"


def validation() -> RetrievalValidation:
    return RetrievalValidation(COLLECTION, tiny_tokenizer(), query_max_length=8, doc_max_length=16, quantization=100, k=10)


def test_a_job_without_validation_has_no_validation_step():
    """Lightning warns 'validation_step but no val_dataloader' on every job whose module defines one."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tiny_tokenizer()), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(backbone)
    assert not is_overridden("validation_step", SpladeModule(encoder, LOSS, OPTIM))
    assert is_overridden("validation_step", ValidatedSpladeModule(encoder, LOSS, OPTIM, 0, validation()))


def test_validation_every_n_steps_logs_metrics_and_keeps_the_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(wrap_with_adapter(backbone, LORA))
    items = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car"]}] * 8
    logger = CSVLogger(tmp_path)
    checkpoints = checkpoint_callbacks(TRAINING, tmp_path / "checkpoints", MONITOR)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=logger, plugins=[StagedCheckpointIO()],
                        callbacks=[ResumeState(None, 2), *checkpoints, *monitoring_callbacks(TRAINING, MONITOR, logger)],
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                        log_every_n_steps=1, **validation_schedule(2, 1))
    checks = validation()
    module = ValidatedSpladeModule(encoder, LOSS, OPTIM, 0, checks)
    encoder.train()
    trainer.fit(module, DataLoader(items, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)), checks.dataloader())

    rows = list(csv.DictReader(open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")))
    validated = [row for row in rows if row.get("val/ndcg@10")]
    assert [int(row["step"]) for row in validated] == [1, 3]  # after optimizer steps 2 and 4 (0-based rows)
    assert all(0 <= float(row["val/ndcg@10"]) <= 1 for row in validated)
    assert any(row.get("train/lr") for row in rows)  # LearningRateMonitor
    assert encoder.training  # Lightning gave the train mode back after validating

    best = checkpoints[-1]
    assert best.best_model_path.endswith("best.ckpt") and (tmp_path / "checkpoints" / "last.ckpt").exists()
    saved = torch.load(best.best_model_path, weights_only=True)
    kept = load_best(module, best)
    assert kept["step"] == saved["global_step"] in (2, 4)
    assert kept["val/ndcg@10"] == pytest.approx(max(float(row["val/ndcg@10"]) for row in validated))
    parameters = dict(module.named_parameters())
    for name, weight in saved["state_dict"].items():
        torch.testing.assert_close(parameters[name].detach(), weight)
    dev = selection_metrics(encoder, checks, OmegaConf.create({"accelerator": "cpu"}))
    assert dev["ndcg@10"] == pytest.approx(kept["val/ndcg@10"])  # the dev figure is the kept checkpoint's


def test_early_stopping_ends_the_fit_after_patience_validations_without_improvement(tmp_path):
    """With a zero learning rate the validation metric never moves: the first validation (step 2) sets the best,
    the second (step 4) does not beat it, and patience 1 stops the fit there instead of at max_steps."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(wrap_with_adapter(backbone, LORA))
    training = OmegaConf.merge(TRAINING, {"keep_best": False, "early_stopping_patience": 1})
    trainer = L.Trainer(max_steps=20, accelerator="cpu", logger=False, callbacks=monitoring_callbacks(training, MONITOR, None),
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        use_distributed_sampler=False, **validation_schedule(2, 1))
    checks = validation()
    items = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car"]}] * 40
    module = ValidatedSpladeModule(encoder, LOSS, OmegaConf.merge(OPTIM, {"lr": 0.0}), 0, checks)
    trainer.fit(module, DataLoader(items, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)), checks.dataloader())
    assert trainer.global_step == 4 and trainer.should_stop


def test_iterating_the_validation_split_draws_nothing_from_the_training_rng():
    # A resumed run restores the RNG as the checkpoint saved it, before that step's validation drew anything.
    before = torch.get_rng_state()
    batches = list(validation().dataloader())
    assert torch.equal(torch.get_rng_state(), before)
    assert {batch["side"] for batch in batches} == {"documents", "queries"}
    assert sum(len(batch["ids"]) for batch in batches) == len(CORPUS) + 2


def test_validation_is_scheduled_in_optimizer_steps_or_off():
    assert validation_schedule(0, 4)["limit_val_batches"] == 0
    assert validation_schedule(3, 4)["val_check_interval"] == 12  # batches: 3 optimizer steps of 4 accumulated
