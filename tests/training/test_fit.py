"""trainer.compile and trainer.gradient_checkpointing: the project's own trainer keys, kept from lightning.Trainer
and applied to the backbones."""

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

from splade_peft.data.pairs import TrainingCollator
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.variants import as_sparse_encoder
from splade_peft.training.fit import checkpoint_backbones, compile_backbones, lightning_arguments
from splade_peft.training.module import SpladeModule
from tests.helpers import ITEMS, LORA, LOSS, OPTIM, composed, tiny_tokenizer


def tiny_encoder():
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return as_sparse_encoder(SpladeEncoder(BertForMaskedLM(config)))


def test_compile_is_not_passed_to_lightning():
    trainer_cfg = composed("trainer.compile=true").trainer
    arguments = lightning_arguments(trainer_cfg)
    assert "compile" not in arguments and arguments["max_steps"] == trainer_cfg.max_steps


def test_compile_backbones_compiles_each_backbone_only_when_asked():
    encoder = tiny_encoder()
    compile_backbones(encoder, OmegaConf.create({"compile": False}))
    assert encoder.masked_lm._compiled_call_impl is None
    compile_backbones(encoder, OmegaConf.create({"compile": True}))
    assert encoder.masked_lm._compiled_call_impl is not None


def test_gradient_checkpointing_is_not_passed_to_lightning():
    trainer_cfg = composed("trainer.gradient_checkpointing=true").trainer
    assert trainer_cfg.gradient_checkpointing is True
    assert "gradient_checkpointing" not in lightning_arguments(trainer_cfg)


def lora_training(gradient_checkpointing: bool, steps: int = 3):
    """A LoRA SPLADE on a tiny random BERT (dropout on in the backbone) after `steps` CPU steps: the
    encoder and the loss of every step."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = as_sparse_encoder(SpladeEncoder(wrap_with_adapter(backbone, LORA)))
    encoder.train()
    checkpoint_backbones(encoder, OmegaConf.create({"gradient_checkpointing": gradient_checkpointing}))
    losses = []

    class StepLosses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[StepLosses()])
    loader = DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16))
    L.seed_everything(0, verbose=False)
    trainer.fit(SpladeModule(encoder, LOSS, OPTIM), loader)
    return encoder, losses


def test_gradient_checkpointing_trains_the_same_lora_steps():
    checkpointed, checkpointed_losses = lora_training(gradient_checkpointing=True)
    plain, plain_losses = lora_training(gradient_checkpointing=False)
    assert checkpointed.masked_lm.is_activation_checkpointing and not plain.masked_lm.is_activation_checkpointing
    assert checkpointed_losses == pytest.approx(plain_losses, rel=1e-5)
    trained = {name: p for name, p in plain.named_parameters() if p.requires_grad}
    assert trained
    for name, p in checkpointed.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, trained[name], rtol=1e-5, atol=1e-7), name


def test_gradient_checkpointing_passes_gradient_to_adapters_on_a_frozen_base():
    encoder, _ = lora_training(gradient_checkpointing=True, steps=0)
    encoder.train()  # checkpointing applies in training mode only
    embeddings = encoder.masked_lm.get_input_embeddings()
    batch = tiny_tokenizer()(["the cat sat on the mat"], return_tensors="pt")
    outputs = []
    hook = embeddings.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    encoder.encode_documents(batch["input_ids"], batch["attention_mask"]).sum().backward()
    hook.remove()
    assert outputs[0].requires_grad  # the frozen embeddings' output, for the recomputed layers' adapters
    # lora_B: lora_A's gradient is 0 while lora_B is at its initial zeros
    first_layer_lora = [p for name, p in encoder.named_parameters() if "layer.0." in name and "lora_B" in name]
    assert first_layer_lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in first_layer_lora)


def test_a_frozen_backbone_is_left_unchecked():
    encoder = tiny_encoder()
    encoder.masked_lm.requires_grad_(False)
    checkpoint_backbones(encoder, OmegaConf.create({"gradient_checkpointing": True}))
    assert not encoder.masked_lm.is_activation_checkpointing
