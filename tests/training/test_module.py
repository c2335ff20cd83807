"""A few Lightning steps on a tiny random backbone: the LoRA weights move, the backbone stays frozen."""

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

from tests.helpers import LORA, LOSS, OPTIM, tiny_tokenizer
from splade_peft.model.adapters import count_parameters, wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.training.module import SpladeModule
from splade_peft.data.pairs import TrainingCollator

def test_lora_steps_change_only_adapter_weights():
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(wrap_with_adapter(backbone, LORA))
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    items = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car on road"]},
             {"query": "moon star", "documents": ["sun moon star", "green tree house"]}] * 4
    loader = DataLoader(items, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16))
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(SpladeModule(encoder, LOSS, OPTIM), loader)

    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all("lora_" in name for name in trainable)
    assert any("lora_B" in name for name in changed)
    assert count_parameters(encoder)["trainable"] == sum(before[n].numel() for n in trainable)


def test_full_fine_tuning_trains_every_weight_and_frozen_none():
    torch.manual_seed(0)
    backbone = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32))
    full = wrap_with_adapter(backbone, OmegaConf.merge(LORA, {"method": "full"}))
    assert count_parameters(full)["trainable"] == count_parameters(full)["total"]
    frozen = wrap_with_adapter(backbone, OmegaConf.merge(LORA, {"method": "frozen"}))
    assert count_parameters(frozen)["trainable"] == 0
