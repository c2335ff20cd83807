"""The Faiss dense index (Pyserini's layout) and the dense evaluation stage: exact inner-product rankings."""

import faiss
import numpy as np
import torch
from omegaconf import OmegaConf

from tests.helpers import composed
from splade_peft.data.collection import Collection
from splade_peft.evaluation.dense_retrieval import RUN_FILE, evaluate_dense_encoder
from splade_peft.model.decoders import random_llama
from splade_peft.model.variants import build_encoder
from splade_peft.pipeline import evaluation_settings
from splade_peft.search.dense import INDEX_FILE, dense_search, write_dense_index
from splade_peft.search.runs import read_trec_run


def normalised(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_search_returns_the_exact_inner_product_ranking(tmp_path):
    documents, queries = normalised(50, 8, 0), normalised(3, 8, 1)
    doc_ids = [f"doc{i}" for i in range(50)]
    size = write_dense_index(doc_ids, documents, tmp_path / "index")
    run = dense_search(tmp_path / "index", ["q0", "q1", "q2"], queries, k=10)
    assert size == (tmp_path / "index" / INDEX_FILE).stat().st_size > 50 * 8 * 4
    for row, query_id in enumerate(run):
        scores = documents @ queries[row]
        expected = np.argsort(-scores)[:10]
        assert [doc_id for doc_id, _ in run[query_id]] == [doc_ids[i] for i in expected]
        assert np.allclose([score for _, score in run[query_id]], scores[expected], atol=1e-5)


def test_k_above_the_corpus_size_returns_every_document(tmp_path):
    write_dense_index(["a", "b"], normalised(2, 4, 0), tmp_path / "index")
    assert len(dense_search(tmp_path / "index", ["q"], normalised(1, 4, 1), k=1000)["q"]) == 2


def test_the_folder_is_laid_out_as_pyserini_faiss_searcher_loads_it(tmp_path):
    """FaissSearcher.load_index reads faiss.read_index(<dir>/index) and one docid per line of <dir>/docid
    (pyserini itself is not imported: that starts a JVM, which must not share a process with PyTorch)."""
    documents = normalised(20, 8, 0)
    doc_ids = [f"d{i}" for i in range(20)]
    write_dense_index(doc_ids, documents, tmp_path / "index")
    index = faiss.read_index(str(tmp_path / "index" / "index"))
    docids = [line.rstrip() for line in open(tmp_path / "index" / "docid")]
    assert docids == doc_ids and index.ntotal == 20 and index.d == 8 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert np.allclose(index.reconstruct(3), documents[3])


def test_dense_evaluation_writes_a_run_and_reports_the_representation(tmp_path, tokenizer):
    torch.manual_seed(0)
    spec = OmegaConf.create({"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32})
    cfg = composed("experiment=smoke_decoder", "eval.k=3")
    encoder = build_encoder(cfg.encoder, random_llama(spec, tokenizer), tokenizer, {}, 16)
    corpus = {"d1": "the cat sat on the mat", "d2": "blue car on road", "d3": "sun moon star", "d4": "green tree"}
    collection = Collection("tiny", "test", corpus, {"q1": "cat mat", "q2": "moon"}, {"q1": {"d1": 1}, "q2": {"d3": 1}}, "f")
    summary = evaluate_dense_encoder(encoder, tokenizer, collection, evaluation_settings(cfg), tmp_path)
    assert summary["representation"] == {"family": "dense", "dim": 16,
                                         "index_bytes": (tmp_path / "index" / INDEX_FILE).stat().st_size}
    assert 0 <= summary["metrics"]["ndcg@10"] <= 1 and set(summary["timing"]) == {"encode_s", "index_s", "search_s"}
    run = read_trec_run(tmp_path / RUN_FILE)
    assert set(run) == {"q1", "q2"} and all(len(hits) == 3 for hits in run.values())
