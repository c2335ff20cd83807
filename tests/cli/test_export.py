"""`python -m splade_peft.export`: a merged plain masked-LM folder gives the adapted model's sparse vectors."""

import subprocess
import sys

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from transformers import AutoModelForMaskedLM, AutoTokenizer

from tests.helpers import REPO, lora_cfg, sparse_vectors, train_steps
from splade_peft.errors import DataError, SpladePeftError
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


# --- every encoder variant, loaded back by sentence-transformers' SparseEncoder ---------------------------------

TEXTS = ["the cat sat on the mat", "sun moon star over the green tree", "blue car on the road"]


def trained_encoder(name: str, base_folder, tokenizer, run_dir, **encoder_overrides):
    """encoder=<name> with LoRA adapters (and query table) moved away from their initial values, saved as a
    job saves it: <run_dir>/adapter and the job's config in <run_dir>/.hydra/config.yaml."""
    from tests.helpers import composed
    from splade_peft.model.variants import build_encoder

    config = composed(f"encoder={name}", *(f"encoder.{key}={value}" for key, value in encoder_overrides.items()))
    torch.manual_seed(0)
    encoder = build_encoder(config.encoder, AutoModelForMaskedLM.from_pretrained(base_folder), tokenizer,
                            {"d1": "the cat sat", "d2": "sun moon"}, 16, adapt=lambda lm: wrap_with_adapter(lm, lora_cfg()))
    with torch.no_grad():
        for parameter_name, parameter in encoder.named_parameters():
            if "lora_B" in parameter_name or parameter_name == "query_encoder.weights":
                parameter.add_(torch.randn_like(parameter) * 0.5)
    encoder.save(run_dir / "adapter")
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"encoder": config.encoder, "model": {"doc_max_length": 16, "query_max_length": 16}}),
                   run_dir / ".hydra" / "config.yaml")
    return encoder.eval()


def encoded(encoder, tokenizer, side: str, max_length: int) -> torch.Tensor:
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        encode = encoder.encode_queries if side == "queries" else encoder.encode_documents
        return encode(batch["input_ids"], batch["attention_mask"])


def assert_our_model_card(folder, encoder: str) -> dict:
    """README.md is the card model_card.py writes, not sentence-transformers' blank template."""
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["library_name"] == "sentence-transformers" and encoder.replace("_", "-") in meta["tags"]
    assert "Unknown" not in card and f"Encoder: `{encoder}`" in card
    return meta


@pytest.mark.parametrize("name", ["splade", "splade_separate", "inference_free"])
def test_every_sparse_variant_loads_in_sentence_transformers_with_the_same_vectors(name, base_folder, tokenizer, tmp_path):
    from sentence_transformers import SparseEncoder

    encoder = trained_encoder(name, base_folder, tokenizer, tmp_path / "run")
    export(tmp_path / "run", tmp_path / "exported")
    assert_our_model_card(tmp_path / "exported", name)

    loaded = SparseEncoder(str(tmp_path / "exported"), device="cpu")
    queries = loaded.encode_query(TEXTS, convert_to_tensor=True).to_dense()
    documents = loaded.encode_document(TEXTS, convert_to_tensor=True).to_dense()
    assert torch.allclose(queries, encoded(encoder, tokenizer, "queries", 16), atol=1e-4)
    assert torch.allclose(documents, encoded(encoder, tokenizer, "documents", 16), atol=1e-4)
    if name == "splade":  # its root is still a plain masked-LM folder
        assert AutoModelForMaskedLM.from_pretrained(tmp_path / "exported").config.vocab_size == len(tokenizer)


@pytest.mark.parametrize("overrides, message", [
    ({"sparsifiers.documents.method": "top_k", "sparsifiers.documents.k": 4}, r"sparsifiers\.documents=top_k"),
    ({"pooling": "sum", "sparsifiers.queries.method": "soft_threshold"}, r"sparsifiers\.queries=soft_threshold"),
])
def test_an_encoder_sentence_transformers_cannot_reproduce_is_refused(overrides, message, base_folder, tokenizer, tmp_path):
    trained_encoder("splade", base_folder, tokenizer, tmp_path / "run", **overrides)
    with pytest.raises(SpladePeftError, match=message):
        export(tmp_path / "run", tmp_path / "exported")
    assert not (tmp_path / "exported").exists()
