"""The exported folder's README.md: a Hugging Face model card built from a job's results.json."""

import json

import yaml
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import eval_results_to_model_index

from splade_peft.model_card import CardInputs, CheckpointFacts, checkpoint_facts, model_card
from splade_peft.results import JobResult

METRICS = {"ndcg@10": 0.61, "mrr@10": 0.57, "recall@100": 0.9, "recall@1000": 0.97}
SPARSITY = {"doc_nnz_mean": 180.5, "doc_nnz_median": 170, "query_nnz_mean": 22.1, "query_nnz_median": 21, "flops": 1.3}
REFERENCE = {"metrics": {"ndcg@10": 0.55, "mrr@10": 0.5, "recall@100": 0.85, "recall@1000": 0.95}, "sparsity": SPARSITY}

# results.json as a completed job writes it (trimmed to the sections the card reads), two datasets in one suite.
RESULTS = {
    "status": "completed",
    "seed": 42,
    "config": {
        "model": {"name": "splade-2l", "name_or_path": "naver/splade-2l", "random_init": None,
                  "query_max_length": 32, "doc_max_length": 256},
        "encoder": {"name": "splade", "pooling": "max"},
        "lora": {"method": "lora", "r": 32, "alpha": 16, "dropout": 0.1, "use_rslora": True, "use_dora": False,
                 "bias": "none", "init": "gaussian", "quantization": None, "target_modules": None, "layers": None,
                 "train_head": "frozen"},
        "data": {"name": "scifact", "source": "beir", "hub_id": None, "negatives": 4, "negatives_source": "bm25",
                 "batch_size": 8, "mixture": {"datasets": {}}},
        "eval": {"datasets": {"in_domain": {"name": "scifact", "split": "test", "hub_id": None},
                              "nfcorpus": {"name": "nfcorpus", "split": "test", "hub_id": "BeIR/nfcorpus"}}},
        "loss": {"name": "contrastive", "weights": {"contrastive": 1.0, "margin_mse": 0.0, "kl": 0.0},
                 "in_batch": True, "temperature": 1.0, "lambda_d": 0.0015, "lambda_q": 0.001},
        "optim": {"lr": 0.0005, "weight_decay": 0.01, "warmup_steps": 20},
        "trainer": {"max_steps": 400, "precision": "32-true"},
        "logger": {"wandb": {"api_key": "<redacted>"}},
    },
    "versions": {"python": "3.11.7", "torch": "2.13.0", "splade_peft_commit": "abc123"},
    "overrides": ["experiment=scifact_recipe", "lora.r=32"],
    "config_fingerprint": "cf79880f8583c0dd",
    "data": {"train": {"split": "train", "queries": 809, "documents": 5183, "fingerprint": "5e1f"},
             "eval": {"scifact": {"split": "test", "fingerprint": "9a0b"}, "nfcorpus": {"split": "test"}}},
    "references": {"bm25": {"scifact": REFERENCE, "nfcorpus": REFERENCE},
                   "zero_shot": {"scifact": REFERENCE, "nfcorpus": REFERENCE}},
    "params": {"trainable": 294912, "total": 4680000, "adapter_bytes": 1180000},
    "metrics": {"scifact": METRICS, "nfcorpus": {**METRICS, "ndcg@10": 0.33}, "average": {**METRICS, "ndcg@10": 0.47}},
    "suites": {"beir-mini": {"datasets": ["scifact", "nfcorpus"], "metrics": {**METRICS, "ndcg@10": 0.47}}},
    "sparsity": {"scifact": SPARSITY, "nfcorpus": SPARSITY},
    "training": {"steps": 400, "training_pairs": 919, "kept": {"step": 300}},
}


def card_of(payload: dict, **changes) -> ModelCard:
    result = JobResult.from_payload(payload)
    return model_card(CardInputs(result, "scifact-lora", "splade", {"method": "lora", "base_model": "naver/splade-2l"},
                                 **changes))


def card_from(payload: dict, **changes) -> str:
    return str(card_of(payload, **changes))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_the_card_states_the_model_in_hub_front_matter():
    card = card_from(RESULTS, checkpoint=CheckpointFacts(license="apache-2.0", model_type="bert"))
    meta = front_matter(card)
    assert meta["base_model"] == "naver/splade-2l" and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "feature-extraction"
    assert {"sparse-encoder", "splade", "peft", "lora"} <= set(meta["tags"])
    assert meta["datasets"] == ["scifact"]
    results = meta["model-index"][0]["results"]
    assert [entry["dataset"]["name"] for entry in results] == ["scifact", "nfcorpus", "beir-mini (average over 2 datasets)"]
    assert results[1]["dataset"] == {"name": "nfcorpus", "type": "BeIR/nfcorpus", "split": "test"}
    assert {"type": "ndcg_at_10", "value": 0.33, "name": "nDCG@10"} in results[1]["metrics"]
    assert all(entry["task"]["type"] == "retrieval" for entry in results)
    assert "Unknown" not in card and "<redacted>" not in card


def test_the_card_text_holds_the_recipe_the_figures_and_the_reproducibility_fields():
    card = card_from(RESULTS)
    for fact in ("`naver/splade-2l`", "r=32", "alpha=16", "294,912 trainable", "lr 0.0005", "contrastive 1.0",
                 "400 of trainer.max_steps=400", "step 300", "python -m splade_peft experiment=scifact_recipe lora.r=32",
                 "cf79880f8583c0dd", "torch 2.13.0", "Seed: 42", "train `5e1f`, scifact `9a0b`", "SparseEncoder(\"scifact-lora\")"):
        assert fact in card, fact
    rows = [line for line in card.splitlines() if line.startswith("| scifact | test |")]
    assert [row.split(" | ")[2] for row in rows] == ["BM25", "zero-shot", "**this model**"]
    assert "| beir-mini (suite) |  | zero-shot | 0.5500 |" in card  # a reference averaged over the suite
    assert "License: unknown" in card and "license" not in front_matter(card)


def test_a_card_without_suites_or_results_is_still_valid():
    """Older results.json (no `suites`) and an adapter exported without its run folder."""
    older = {key: value for key, value in RESULTS.items() if key != "suites"}
    entries = front_matter(card_from(older))["model-index"][0]["results"]
    assert len(entries) == 2
    bare = card_from({})
    meta = front_matter(bare)
    assert meta["base_model"] == "naver/splade-2l" and "model-index" not in meta
    assert "not recorded" in bare and "Unknown" not in bare


def test_a_plain_masked_lm_export_is_carded_for_transformers():
    """Without sentence-transformers the export writes only the merged masked LM: the card says how to load that."""
    card = card_from(RESULTS, sentence_transformers=False)
    assert front_matter(card)["library_name"] == "transformers"
    assert "AutoModelForMaskedLM.from_pretrained(\"scifact-lora\")" in card and "SparseEncoder" not in card.split("## Usage")[1]


def test_a_local_checkpoint_is_named_by_the_hub_id_it_was_saved_from(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "naver/splade-v3", "model_type": "bert",
                                                      "architectures": ["BertForMaskedLM"]}))
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\n# SPLADE\n")
    facts = checkpoint_facts(str(tmp_path))
    assert facts == CheckpointFacts("naver/splade-v3", "cc-by-nc-sa-4.0", "bert", "BertForMaskedLM")
    assert front_matter(card_from(RESULTS, checkpoint=facts))["base_model"] == "naver/splade-v3"


def test_the_card_metadata_round_trips_through_huggingface_hubs_parser(tmp_path):
    """What the hub reads back from README.md: the model-index holds the job's figures, per dataset and per suite."""
    card_of(RESULTS, checkpoint=CheckpointFacts(license="apache-2.0")).save(tmp_path / "README.md")
    meta, loaded = metadata_load(tmp_path / "README.md"), ModelCard.load(tmp_path / "README.md")
    assert loaded.data.model_name == "scifact-lora" and loaded.data.to_dict() == meta
    assert eval_results_to_model_index(loaded.data.model_name, loaded.data.eval_results) == meta["model-index"]
    recorded = {(entry.dataset_name, entry.dataset_split, entry.metric_type): entry.metric_value
                for entry in loaded.data.eval_results}
    expected = {(name, "test", metric.replace("@", "_at_")): value
                for name in ("scifact", "nfcorpus") for metric, value in RESULTS["metrics"][name].items()}
    expected |= {("beir-mini (average over 2 datasets)", None, metric.replace("@", "_at_")): value
                 for metric, value in RESULTS["suites"]["beir-mini"]["metrics"].items()}
    assert recorded == expected
    assert {"sentence-transformers", "sparse-encoder", "lora"} <= set(loaded.data.tags) and loaded.data.license == "apache-2.0"
