"""Encoder variants, sparsifiers and decoder backbones: each trains exactly the parameters it means to."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from tests.helpers import REPO, word_tokenizer, composed, loss_section
from splade_peft.config import validate
from splade_peft.data.pairs import TrainingCollator
from splade_peft.errors import ConfigError
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.decoders import random_llama
from splade_peft.model.query_table import idf_weights
from splade_peft.model.sparsifiers import HardThreshold, MeanThreshold, TopK
from splade_peft.model.variants import OWN_PARAMETERS_FILE, QUERY_LM_FOLDER, build_encoder
from splade_peft.training.module import SpladeModule

CORPUS = {"d1": "the cat sat on the mat", "d2": "blue car on road", "d3": "sun moon star", "d4": "green tree house"}
TRAINING_QUERIES = ("cat sat", "moon star")
LORA = OmegaConf.create(
    {"method": "lora", "r": 4, "alpha": 4, "dropout": 0.0, "use_rslora": True, "use_dora": False, "bias": "none",
     "target_modules": None, "init": "gaussian", "quantization": None, "layers": None, "train_head": "frozen"}
)
LOSS = loss_section(lambda_d=1e-3, lambda_q=1e-3, warmup_steps=2)
SPARSIFIER_MODULES = {"documents": "document_sparsifier", "queries": "query_sparsifier"}
OPTIM = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0, "warmup_steps": 1, "query_table_lr": 5e-1})


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizerFast:
    return word_tokenizer()


def batch(tokenizer, texts: list[str]) -> dict:
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def encoder_cfg(name: str = "splade", **sparsifiers) -> OmegaConf:
    cfg = OmegaConf.load(REPO / "conf" / "encoder" / "splade.yaml")
    cfg.name = name
    for side, spec in sparsifiers.items():
        cfg.sparsifiers[side] = OmegaConf.merge(cfg.sparsifiers[side], spec)
    return cfg


def tiny_bert(tokenizer) -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=32))


def tiny_llama(tokenizer):
    torch.manual_seed(0)
    spec = OmegaConf.create({"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32})
    return random_llama(spec, tokenizer)


def build(cfg, backbone, tokenizer, lora=LORA):
    return build_encoder(cfg, backbone, tokenizer, CORPUS, 16, adapt=lambda lm: wrap_with_adapter(lm, lora))


def train_steps(encoder, tokenizer, steps: int = 4) -> set[str]:
    """Train a few steps; return the names of the parameters that changed."""
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    items = [{"query": TRAINING_QUERIES[0], "documents": [CORPUS["d1"], CORPUS["d2"]]},
             {"query": TRAINING_QUERIES[1], "documents": [CORPUS["d3"], CORPUS["d4"]]}] * 4
    loader = DataLoader(items, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    encoder.train()
    trainer.fit(SpladeModule(encoder, LOSS, OPTIM), loader)
    return {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}


def trainable(encoder) -> set[str]:
    return {name for name, p in encoder.named_parameters() if p.requires_grad}


def test_splade_shares_one_adapted_lm_for_both_sides(tokenizer):
    encoder = build(encoder_cfg("splade"), tiny_bert(tokenizer), tokenizer)
    assert encoder.query_encoder is encoder.document_encoder
    changed = train_steps(encoder, tokenizer)
    assert changed <= trainable(encoder) and all("lora_" in name for name in trainable(encoder))
    assert any("lora_B" in name for name in changed)


def test_splade_separate_trains_two_adapters_on_two_copies(tokenizer, tmp_path):
    encoder = build(encoder_cfg("splade_separate"), tiny_bert(tokenizer), tokenizer)
    assert encoder.query_encoder.masked_lm is not encoder.document_encoder.masked_lm
    changed = train_steps(encoder, tokenizer)
    assert changed <= trainable(encoder) and all("lora_" in name for name in trainable(encoder))
    for side in ("query_encoder.", "document_encoder."):
        assert any(name.startswith(side) and "lora_B" in name for name in changed), side
    ids = batch(tokenizer, ["cat sat on the mat"])
    with torch.no_grad():
        encoder.eval()
        assert not torch.equal(encoder.encode_queries(**ids), encoder.encode_documents(**ids))
    encoder.save(tmp_path)
    assert (tmp_path / "adapter_config.json").exists() and (tmp_path / QUERY_LM_FOLDER / "adapter_config.json").exists()


def test_inference_free_trains_the_query_table_and_the_document_adapter_only(tokenizer, tmp_path):
    encoder = build(encoder_cfg("inference_free"), tiny_bert(tokenizer), tokenizer)
    initial = encoder.query_encoder.weights.detach().clone()
    assert not encoder.regularise_queries
    changed = train_steps(encoder, tokenizer)
    assert "query_encoder.weights" in changed
    assert changed <= trainable(encoder)
    assert all("lora_" in name for name in trainable(encoder) - {"query_encoder.weights"})
    assert any(name.startswith("document_encoder.") and "lora_B" in name for name in changed)
    # Only the rows of tokens that occur in training queries move; special tokens never get a weight.
    query_tokens = set(tokenizer(list(TRAINING_QUERIES))["input_ids"][0] + tokenizer(list(TRAINING_QUERIES))["input_ids"][1])
    moved = set((encoder.query_encoder.weights.detach() != initial).nonzero().squeeze(1).tolist())
    assert moved and moved <= query_tokens - set(tokenizer.all_special_ids)
    with torch.no_grad():
        vector = encoder.encode_queries(**batch(tokenizer, ["cat cat sat"]))
    assert set(vector[0].nonzero().squeeze(1).tolist()) == {tokenizer.vocab["cat"], tokenizer.vocab["sat"]}
    encoder.save(tmp_path)
    assert (tmp_path / OWN_PARAMETERS_FILE).exists()


def test_query_table_starts_from_corpus_idf(tokenizer):
    idf = idf_weights(tokenizer, CORPUS.values(), 16)
    vocab = tokenizer.vocab
    assert idf[vocab["on"]] < idf[vocab["cat"]] < idf[vocab["dog"]]  # in 2 documents, 1, none
    encoder = build_encoder(encoder_cfg("inference_free"), tiny_bert(tokenizer), tokenizer, CORPUS, 16)
    with torch.no_grad():
        vector = encoder.encode_queries(**batch(tokenizer, ["the cat"]))[0]
    assert vector[vocab["cat"]] == pytest.approx(idf[vocab["cat"]].item())
    assert vector[vocab["[CLS]"]] == 0 and vector[vocab["[SEP]"]] == 0


def test_inference_free_query_table_gets_its_own_learning_rate(tokenizer):
    encoder = build(encoder_cfg("inference_free"), tiny_bert(tokenizer), tokenizer)
    groups = encoder.parameter_groups(OPTIM)
    table = [g for g in groups if any(p is encoder.query_encoder.weights for p in g["params"])]
    assert len(table) == 1 and table[0]["lr"] == OPTIM.query_table_lr and table[0]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(trainable(encoder))


@pytest.mark.parametrize("side", ["documents", "queries"])
@pytest.mark.parametrize("method,learned_parameter", [
    ("soft_threshold", "threshold"), ("mean_threshold", "scale"),
])
def test_learned_sparsifiers_train_their_cut_off(tokenizer, side, method, learned_parameter):
    spec = {"method": method, "threshold": 0.05, "scale": 0.5, "learned": True}
    encoder = build(encoder_cfg("splade", **{side: spec}), tiny_bert(tokenizer), tokenizer)
    name = f"{SPARSIFIER_MODULES[side]}.{learned_parameter}"
    changed = train_steps(encoder, tokenizer)
    assert name in changed
    assert changed <= trainable(encoder)
    assert all("lora_" in n for n in trainable(encoder) - {name})


@pytest.mark.parametrize("spec", [{"method": "top_k", "k": 3}, {"method": "threshold", "threshold": 0.05}])
def test_fixed_sparsifiers_leave_training_to_the_adapter(tokenizer, spec):
    encoder = build(encoder_cfg("splade", documents=spec, queries=spec), tiny_bert(tokenizer), tokenizer)
    changed = train_steps(encoder, tokenizer)
    assert changed <= trainable(encoder) and all("lora_" in name for name in trainable(encoder))
    assert any("lora_B" in name for name in changed)


def test_fixed_mean_threshold_does_not_train(tokenizer):
    spec = {"method": "mean_threshold", "scale": 0.5, "learned": False}
    encoder = build(encoder_cfg("splade", documents=spec), tiny_bert(tokenizer), tokenizer)
    changed = train_steps(encoder, tokenizer)
    assert "document_sparsifier.scale" not in trainable(encoder) | changed
    assert encoder.document_sparsifier.scale.item() == 0.5


def test_fixed_sparsifiers_prune_as_specified():
    torch.manual_seed(0)
    weights = torch.relu(torch.randn(3, 40))
    top = TopK(5)(weights)
    assert ((top > 0).sum(dim=1) <= 5).all()
    assert torch.equal(top.max(dim=1).values, weights.max(dim=1).values)
    thresholded = HardThreshold(0.5)(weights)
    assert torch.equal(thresholded > 0, weights > 0.5) and torch.equal(thresholded[weights > 0.5], weights[weights > 0.5])
    mean = MeanThreshold(1.0, learned=False)(weights)
    active_mean = weights.sum(dim=1, keepdim=True) / (weights > 0).sum(dim=1, keepdim=True)
    assert torch.allclose(mean, torch.relu(weights - active_mean))


def test_sparsifiers_pass_gradient_to_the_weights_they_keep():
    weights = torch.relu(torch.randn(2, 30)).requires_grad_()
    TopK(4)(weights).sum().backward()
    assert ((weights.grad > 0).sum(dim=1) == 4).all()


def test_top_k_and_threshold_bound_the_encoded_vectors(tokenizer):
    cfg = encoder_cfg("splade", documents={"method": "top_k", "k": 3}, queries={"method": "threshold", "threshold": 0.3})
    encoder = build_encoder(cfg, tiny_bert(tokenizer), tokenizer, CORPUS, 16)
    ids = batch(tokenizer, list(CORPUS.values()))
    with torch.no_grad():
        documents, queries = encoder.encode_documents(**ids), encoder.encode_queries(**ids)
    assert ((documents > 0).sum(dim=1) <= 3).all()
    assert (queries[queries > 0] > 0.3).all()
    assert not encoder.own_parameters()  # fixed sparsifiers: nothing to train


@pytest.mark.parametrize("bidirectional", [False, True])
def test_decoder_backbone_trains_only_its_adapter(tokenizer, bidirectional):
    cfg = encoder_cfg("splade")
    cfg.bidirectional = bidirectional
    encoder = build(cfg, tiny_llama(tokenizer), tokenizer)
    changed = train_steps(encoder, tokenizer)
    assert changed <= trainable(encoder) and all("lora_" in name for name in trainable(encoder))
    assert any("lora_B" in name for name in changed)


def test_decoder_head_matches_the_definition_on_full_logits(tokenizer):
    llama = tiny_llama(tokenizer).eval()
    encoder = build_encoder(encoder_cfg("splade"), llama, tokenizer, CORPUS, 16)
    ids = batch(tokenizer, ["cat sat on the mat", "sun"])
    with torch.no_grad():
        logits = llama(**ids).logits
        expected = torch.stack([torch.log1p(torch.relu(logits[i, m.bool()])).amax(dim=0)
                                for i, m in enumerate(ids["attention_mask"])])
        assert torch.allclose(encoder.encode_documents(**ids), expected, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_bidirectional_attention_lets_early_tokens_see_later_ones(tokenizer, bidirectional):
    llama = tiny_llama(tokenizer).eval()
    cfg = encoder_cfg("splade")
    cfg.bidirectional = bidirectional
    build_encoder(cfg, llama, tokenizer, CORPUS, 16)
    first, second = batch(tokenizer, ["cat sat on mat"]), batch(tokenizer, ["cat sat on road"])
    with torch.no_grad():
        first_logits, second_logits = llama(**first).logits[0, 1], llama(**second).logits[0, 1]
    assert torch.allclose(first_logits, second_logits) != bidirectional


def test_bidirectional_with_a_masked_lm_is_refused(tokenizer):
    cfg = encoder_cfg("splade")
    cfg.bidirectional = True
    with pytest.raises(ConfigError, match="encoder.bidirectional"):
        build_encoder(cfg, tiny_bert(tokenizer), tokenizer, CORPUS, 16)


def smoke_composed(*overrides: str):
    return composed("experiment=smoke", *overrides)


@pytest.mark.parametrize("override,key", [
    ("encoder.name=colbert", "encoder.name"),
    ("encoder.sparsifiers.documents.method=top_p", "encoder.sparsifiers.documents.method"),
    ("encoder.sparsifiers.queries.k=0", "encoder.sparsifiers.queries.k"),
    ("encoder.sparsifiers.documents.threshold=-1", "encoder.sparsifiers.documents.threshold"),
    ("optim.query_table_lr=0", "optim.query_table_lr"),
    ("encoder.pooling=mean", "encoder.pooling"),
    ("encoder.bidirectional=true", "encoder.bidirectional"),
])
def test_wrong_encoder_settings_name_the_key_and_allowed_values(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        validate(smoke_composed(override))
    assert "use " in str(error.value)


def test_every_variant_composes_and_validates():
    for name in ("splade", "splade_separate", "inference_free"):
        cfg = smoke_composed(f"encoder={name}")
        validate(cfg)
        assert cfg.encoder.name == name


@pytest.mark.slow
def test_encoder_variants_run_end_to_end_in_one_multirun(tmp_path):
    """`python -m splade_peft -m experiment=smoke encoder=...` on a small slice, one process for every variant
    (each with a learned document sparsifier and a top-k query one): each job writes metrics to results.json."""
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", "-m", f"hydra.sweep.dir={tmp_path}", "experiment=smoke",
         "trainer.max_steps=2", "data.max_queries=30", "data.max_documents=200", "data.negatives_source=random",
         "eval.zero_shot=false", "eval.bm25=false", "encoder=splade_separate,inference_free",
         "encoder.sparsifiers.documents.method=mean_threshold", "encoder.sparsifiers.queries.method=top_k"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = {r["config"]["encoder"]["name"]: r for r in map(json.loads, map(Path.read_text, tmp_path.glob("*/results.json")))}
    assert set(results) == {"splade_separate", "inference_free"}
    for name, result in results.items():
        assert result["status"] == "completed" and 0 <= result["metrics"]["average"]["ndcg@10"] <= 1, name
        assert result["training"]["steps"] == 2 and result["sparsity"], name
    # Two LM copies with two adapters, against one LM plus a vocabulary-sized query table.
    assert results["splade_separate"]["params"]["total"] > results["inference_free"]["params"]["total"]
