"""Test session setup (an offline, quiet environment) and the fixtures several packages' tests share."""

import os

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from tests.helpers import REPO, word_tokenizer

# No hub is reachable here: fail fast instead of retrying, and never try to reach W&B.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizerFast:
    return word_tokenizer()


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, tokenizer):
    """A tiny random BERT masked LM saved as a Hugging Face folder (what PEFT reloads adapters onto)."""
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=128))
    folder = tmp_path_factory.mktemp("base")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def own_wandb_service(monkeypatch):
    """Every job a test starts runs as a user's would, with a W&B service of its own: a test that used W&B in
    this process leaves WANDB_SERVICE set, and a job inheriting it shares that service's run registry (a
    resumed job's run id would read as "in use" by the run its killed predecessor left there)."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
