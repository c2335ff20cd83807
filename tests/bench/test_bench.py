"""The benchmark's correctness checks on tiny inputs: same vectors as the naive loop, the same vector files
from the pipeline as from the per-document reference, same rankings across the three searchers (the validation during training is tested in tests/training/test_validation.py)."""

import random

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from tests.helpers import WORDS, word_tokenizer
from bench.encoding import bench_corpus_files, compare, naive_vectors, project_vectors
from bench.results import _files
from bench.indexing import replicated_corpus
from bench.search import agreement, bench_search
from splade_peft.index.impact import build_impact_index, write_vector_collection
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.projection import MaskedMaxProjection

TEXTS = ["the cat sat on the mat", "dog", "blue car on the long road ran past the green tree and the red house",
         "sun moon star", "a park", "moon"]


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizerFast:
    return word_tokenizer()


@pytest.fixture(scope="module")
def masked_lm(tokenizer) -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=32)).eval()


def test_project_encoder_gives_the_naive_loops_vectors(masked_lm, tokenizer):
    naive = naive_vectors(masked_lm, tokenizer, TEXTS, max_length=12, batch_size=4)
    project = project_vectors(masked_lm, tokenizer, TEXTS, max_length=12)
    assert (naive > 0).any()
    assert compare(naive, project)["identical"]


def test_corpus_files_of_the_pipeline_and_the_per_document_reference_are_compared_byte_for_byte(masked_lm, tokenizer):
    index = OmegaConf.create({"tokens_per_batch": 32, "max_batch_size": 2, "quantization": 100, "shards": 2})
    texts = {f"d{i}": text for i, text in enumerate(TEXTS * 3)}
    files = bench_corpus_files(SpladeEncoder(masked_lm), tokenizer, texts, 12, index, rounds=1)
    assert files["identical_files"] and files["written"] > 0 and files["texts"] == len(texts)
    assert files["pipeline_vs_per_document"] == pytest.approx(
        files["pipeline_docs_per_s"] / files["per_document_docs_per_s"])
    assert f"{files['pipeline_vs_per_document']:.2f}x; files identical" in "".join(_files({"corpus_files": files}))


def test_compare_catches_a_changed_weight():
    reference = torch.rand(3, 40)
    changed = reference.clone()
    changed[1, 5] += 1e-3
    assert compare(reference, reference)["identical"]
    assert not compare(reference, changed)["identical"]


def test_inference_path_returns_the_training_paths_values():
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(3, 7, 5), torch.randn(11, 5), torch.randn(11)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [0] * 5 + [1] * 2])
    training = MaskedMaxProjection.apply(hidden.requires_grad_(), weight, bias, mask)
    with torch.inference_mode():
        inference = MaskedMaxProjection.apply(hidden.detach(), weight, bias, mask)
    assert torch.allclose(training.detach(), inference)


def test_agreement_tells_identical_from_cutoff_ties_and_from_different():
    reference = {"q": [("a", 3.0), ("b", 2.0), ("c", 2.0)]}
    assert agreement(reference, {"q": [("a", 3.0), ("c", 2.0), ("b", 2.0)]}, reference)["identical"] == 1
    cutoff_tie = agreement(reference, {"q": [("a", 3.0), ("b", 2.0), ("d", 2.0)]}, reference)
    assert (cutoff_tie["identical"], cutoff_tie["identical_up_to_cutoff_ties"]) == (0, 1)
    different = agreement(reference, {"q": [("b", 3.0), ("a", 2.0), ("c", 2.0)]}, reference)
    assert different["identical_up_to_cutoff_ties"] == 0


def test_replicated_corpus_has_the_requested_size_and_only_original_terms():
    vectors = {"d1": {"x": 3, "y": 2, "z": 1}, "d2": {"y": 5, "w": 4}}
    corpus = replicated_corpus(vectors, documents=7, drop=0.5, seed=0)
    assert len(corpus) == 7
    assert corpus["d1-0"] == vectors["d1"]
    assert all(vector and set(vector) <= set(vectors[doc_id.split("-")[0]]) for doc_id, vector in corpus.items())


@pytest.mark.slow
def test_exact_java_batch_and_python_wrapper_rank_identically(tmp_path):
    rng = random.Random(3)
    corpus = {f"d{i:03d}": {term: rng.randint(1, 9) for term in rng.sample(WORDS, rng.randint(1, 6))} for i in range(80)}
    queries = {f"q{i}": {term: rng.randint(1, 5) for term in rng.sample(WORDS, 3)} for i in range(20)}
    write_vector_collection(corpus.items(), tmp_path / "vectors", shards=2)
    build_impact_index(tmp_path / "vectors", tmp_path / "index", threads=2)
    results = bench_search(tmp_path / "index", corpus, queries, [10, 1000], threads=2, workdir=tmp_path)
    for k in (10, 1000):
        for path, agreed in results[f"k={k}"]["agreement_with_exact"].items():
            assert agreed["identical_up_to_cutoff_ties"] == agreed["queries"] == 20, (k, path, agreed)




def test_the_suite_table_and_the_engine_targets_are_read_from_the_measured_ratios():
    from bench.results import engine_checks
    from bench.suite import suite_markdown

    row = {"timing": {"encode_s": 10.0, "index_s": 1.0, "search_s": 2.0}, "suite_ndcg@10": 0.5,
           "datasets": ["scifact", "cranfield"]}
    suite = {"suite": "local", "overrides": [], "exact_vs_lucene_wall": 0.6,
             "engines": {"lucene": {**row, "wall_s": 100.0}, "exact": {**row, "wall_s": 60.0}}}
    assert "| exact | 60.0 | 10.0 | 1.0 | 2.0 | 0.5000 |" in suite_markdown({"suite": suite})
    corpus = lambda qps, quality, key: {"documents": 5, "engines": {"seismic": {"qps_vs_lucene": qps, key: quality}}}
    checks = engine_checks({"scifact": corpus(11.0, 1.0, "ndcg@10_vs_exact"),
                            "synthetic": corpus(12.0, 0.98, "overlap@10_vs_exact")})
    assert [met for *_, met in checks] == [True, False]
    assert "of exact's overlap@10 (synthetic, 5 documents)" in checks[1][0]
