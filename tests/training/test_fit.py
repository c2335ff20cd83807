"""trainer.compile: the project's own trainer key, kept from lightning.Trainer and applied to the backbones."""

from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM

from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.variants import as_sparse_encoder
from splade_peft.training.fit import compile_backbones, lightning_arguments
from tests.helpers import composed


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
