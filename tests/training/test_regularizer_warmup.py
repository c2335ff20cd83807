"""RegularizerWarmup: the callback that sets the module's regulariser weights before each step -- SPLADE's
quadratic ramp over loss.warmup_steps (or loss.warmup_fraction of the run), no query L1 for an encoder that
does not regularise its queries, nothing for a dense encoder."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

from splade_peft.data.pairs import TrainingCollator
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.training.module import SpladeModule
from splade_peft.training.regularizers import RegularizerWarmup
from tests.helpers import ITEMS, LOSS, OPTIM, STEPS, loss_section, tiny_tokenizer


def weights_at(steps, loss_cfg, total_steps: int, sparse: bool = True, regularise_queries: bool = True) -> list[tuple]:
    """(lambda_d, lambda_q) the callback sets at each of `steps`, for an encoder of the given kind."""
    module = SimpleNamespace(encoder=SimpleNamespace(is_sparse=sparse, regularise_queries=regularise_queries))
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=total_steps)
    warmup = RegularizerWarmup(loss_cfg)
    warmup.on_train_start(trainer, module)
    weights = []
    for step in steps:
        trainer.global_step = step
        warmup.on_train_batch_start(trainer, module, None, 0)
        weights.append((module.lambda_d, module.lambda_q))
    return weights


def test_weights_ramp_quadratically_over_the_fraction_of_the_run():
    loss_cfg = loss_section(lambda_d=0.4, lambda_q=0.2, warmup_steps=None, warmup_fraction=0.25)
    got = weights_at([0, 2, 4, 9], loss_cfg, total_steps=16)  # warm-up: 4 steps
    assert got == [(0.0, 0.0), pytest.approx((0.1, 0.05)), (0.4, 0.2), (0.4, 0.2)]


def test_warmup_steps_given_in_steps_win_over_the_fraction():
    loss_cfg = loss_section(lambda_d=0.4, lambda_q=0.2, warmup_steps=2, warmup_fraction=0.25)
    assert weights_at([1, 2], loss_cfg, total_steps=16) == [pytest.approx((0.1, 0.05)), (0.4, 0.2)]


def test_queries_the_encoder_does_not_regularise_and_dense_encoders_get_no_weight():
    loss_cfg = loss_section(lambda_d=0.4, lambda_q=0.2, warmup_steps=0)
    assert weights_at([3], loss_cfg, 16, regularise_queries=False) == [(0.4, 0.0)]
    assert weights_at([3], loss_cfg, 16, sparse=False) == [(0.0, 0.0)]


def logged_lambdas(callbacks: list) -> list[tuple]:
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    module = SpladeModule(SpladeEncoder(backbone), LOSS, OPTIM)
    logged = []
    module.log_dict = lambda values, **kwargs: logged.append((values["train/lambda_d"], values["train/lambda_q"]))
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)))
    return logged


def test_the_fit_logs_the_weights_the_callback_set_at_each_step():
    # LOSS: lambda_d 1e-3, lambda_q 1e-3, warm-up 2 steps
    expected = [(0.0, 0.0), (2.5e-4, 2.5e-4), (1e-3, 1e-3), (1e-3, 1e-3)]
    assert logged_lambdas([RegularizerWarmup(LOSS)]) == [pytest.approx(weights) for weights in expected]
    assert logged_lambdas([]) == [(0.0, 0.0)] * STEPS  # the module alone does not regularise
