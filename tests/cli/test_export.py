"""`python -m splade_peft.export`: a merged plain masked-LM folder gives the adapted model's sparse vectors."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForMaskedLM, AutoTokenizer

from tests.helpers import REPO, lora_cfg, sparse_vectors, train_steps
from splade_peft.errors import DataError
from splade_peft.export import export
from splade_peft.model.adapters import save_adapter, wrap_with_adapter
from splade_peft.model.backbones import load_backbone

TOP_TERMS = 20


def assert_same_sparse_vectors(exported, expected, tokenizer, atol):
    vectors = sparse_vectors(exported, tokenizer)
    for row, reference in zip(vectors, expected):
        active = int((reference > 0).sum())
        top = min(TOP_TERMS, active)
        assert set(row.topk(top).indices.tolist()) == set(reference.topk(top).indices.tolist())
    assert torch.allclose(vectors, expected, atol=atol), (vectors - expected).abs().max()


@pytest.mark.parametrize("overrides", [{}, {"train_head": "full"}, {"method": "loha", "r": 4}, {"init": "pissa"}],
                         ids=["lora", "lora-head-full", "loha", "pissa"])
def test_exported_folder_loads_alone_and_gives_the_same_vectors(overrides, base_folder, tokenizer, tmp_path):
    cfg = lora_cfg(**overrides)
    torch.manual_seed(0)
    adapted = wrap_with_adapter(AutoModelForMaskedLM.from_pretrained(base_folder), cfg, 4)
    train_steps(adapted, tokenizer)
    expected = sparse_vectors(adapted, tokenizer)
    save_adapter(adapted, tmp_path / "run" / "adapter")

    export(tmp_path / "run", tmp_path / "exported")
    assert not list((tmp_path / "exported").glob("adapter_*"))
    exported = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported")
    assert_same_sparse_vectors(exported, expected, AutoTokenizer.from_pretrained(tmp_path / "exported"), atol=1e-4)


@pytest.mark.slow
def test_qlora_exports_dequantised(base_folder, tokenizer, tmp_path):
    cfg = lora_cfg(quantization="4bit")
    masked_lm, _ = load_backbone(OmegaConf.create({"name_or_path": str(base_folder), "random_init": None}), tmp_path, "4bit")
    adapted = wrap_with_adapter(masked_lm, cfg)
    train_steps(adapted, tokenizer)
    expected = sparse_vectors(adapted, tokenizer)
    save_adapter(adapted, tmp_path / "adapter")

    completed = subprocess.run([sys.executable, "-m", "splade_peft.export", str(tmp_path / "adapter"), str(tmp_path / "out")],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    exported = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert exported.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.float32
    assert_same_sparse_vectors(exported, expected, tokenizer, atol=1e-4)


def test_a_folder_without_an_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"splade_peft.json: not found.*lora=frozen"):
        export(tmp_path, tmp_path / "out")
