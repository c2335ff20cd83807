"""The job's device: where trainer.accelerator/devices put training, and where evaluation puts the
encoder afterwards (Lightning's teardown leaves a trained module on the CPU)."""

import dataclasses

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

import splade_peft.evaluation.retrieval as retrieval
from tests.helpers import ITEMS, LORA, LOSS, OPTIM, tiny_tokenizer
from splade_peft.data.collection import Collection
from splade_peft.data.pairs import TrainingCollator
from splade_peft.index.config import SEARCH_ENGINES
from splade_peft.device import inference_precision, job_device
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.training.module import SpladeModule

CUDA = torch.cuda.is_available()
# The accelerator this machine can train on: the test below is about the GPU where there is one.
TRAINER = OmegaConf.create({"accelerator": "gpu" if CUDA else "cpu", "devices": 1, "precision": "bf16-mixed" if CUDA else "32-true"})


def test_cpu_unless_a_gpu_is_asked_for_and_there():
    assert job_device(OmegaConf.create({"accelerator": "cpu", "devices": 2})) == torch.device("cpu")
    gpu = job_device(OmegaConf.create({"accelerator": "gpu", "devices": [1]}))
    assert gpu == (torch.device("cuda", 1) if CUDA else torch.device("cpu"))
    assert job_device({}) == torch.device("cpu")


def test_the_trained_encoder_is_evaluated_on_the_training_device(tmp_path, monkeypatch):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(wrap_with_adapter(backbone, LORA))
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **TRAINER)
    encoder.train()
    trainer.fit(SpladeModule(encoder, LOSS, OPTIM), DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)))

    seen = {}

    def record_device(encoder, *arguments, **keywords):
        seen["device"] = next(encoder.parameters()).device
        seen["autocast"] = torch.is_autocast_enabled("cuda")
        return {}

    lucene = SEARCH_ENGINES.get("lucene")
    monkeypatch.setitem(SEARCH_ENGINES.variants, "lucene", dataclasses.replace(lucene, implementation=record_device))
    settings = retrieval.EvaluationSettings(index=OmegaConf.create({"name": "lucene", "quantization": 100}), trainer=TRAINER,
                                            encoder={"name": "splade"}, query_max_length=8, doc_max_length=16, k=10,
                                            search_threads=1)
    collection = Collection("toy", "dev", {"d0": "cat"}, {"q0": "cat"}, {"q0": {"d0": 1}}, "toy")
    retrieval.evaluate_trained(encoder, tokenizer, {"toy": collection}, settings, tmp_path, "model")
    assert seen["device"].type == job_device(TRAINER).type == trainer.strategy.root_device.type
    assert seen["autocast"] == CUDA  # bf16-mixed training, bf16 encoding


def test_no_autocast_on_the_cpu_or_in_full_precision():
    assert not isinstance(inference_precision(TRAINER, torch.device("cpu")), torch.autocast)
    assert not isinstance(inference_precision({"precision": "32-true"}, torch.device("cuda")), torch.autocast)
