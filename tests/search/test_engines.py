"""The sparse search engines beside Lucene (index=exact, index=seismic) over the same quantised vectors, the
self-hit rule every engine honours (collection.ignore_identical_ids), and an unknown engine's error.

Each Lucene build or search starts a JVM (2-3 s), so the engines are compared on one shared corpus."""

import json
import random

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM

from splade_peft.config import validate
from splade_peft.data.collection import Collection
from splade_peft.errors import ConfigError
from splade_peft.evaluation import retrieval
from splade_peft.evaluation.metrics import evaluate
from splade_peft.index.config import SEARCH_ENGINES
from splade_peft.index.impact import build_impact_index, read_vector_collection, write_vector_collection
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.pipeline import evaluation_settings
from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import read_trec_run, without_self_hits
from splade_peft.search.seismic import SeismicImpactSearcher
from tests.helpers import CONF, WORDS, composed, run_cli

SEISMIC = OmegaConf.to_container(OmegaConf.load(CONF / "index" / "seismic.yaml").seismic)
TERMS = [f"t{i}" for i in range(400)] + ["##ing", "c++", "[unused1]", "ünï"]
# Measured on this corpus with conf/index/seismic.yaml's parameters: Seismic's nDCG@10 0.5099 against Lucene's
# 0.5098 (97/100 queries with the same top 10; the same in 5 builds). Seismic is approximate: the bound leaves room.
SEISMIC_NDCG_TOLERANCE = 0.02


def zipf_vector(rng: random.Random, length: int, weights: list[float]) -> dict[str, int]:
    """A SPLADE-like impact vector: Zipf-distributed terms, integer impacts."""
    terms = sorted(set(rng.choices(TERMS, weights=weights, k=length)))  # sorted: independent of the hash seed
    return {term: rng.randint(1, 300) for term in terms}


@pytest.fixture(scope="module")
def corpus_and_queries():
    """2,000 documents; each query is drawn from one document's terms, which is its one relevant document."""
    rng = random.Random(3)
    weights = [1 / (rank + 1) for rank in range(len(TERMS))]
    docs = {f"d{i:04d}": zipf_vector(rng, rng.randint(30, 60), weights) for i in range(2000)}
    targets = rng.sample(sorted(docs), 100)
    queries = {f"q{i}": {term: rng.randint(1, 200) for term in rng.sample(sorted(docs[target]), 8)}
               for i, target in enumerate(targets)}
    qrels = {f"q{i}": {target: 1} for i, target in enumerate(targets)}
    return docs, queries, qrels


@pytest.fixture(scope="module")
def lucene_top10(corpus_and_queries, tmp_path_factory):
    docs, queries, _ = corpus_and_queries
    root = tmp_path_factory.mktemp("engines")
    write_vector_collection(docs.items(), root / "vectors", shards=2)
    build_impact_index(root / "vectors", root / "index", threads=1)
    return impact_search(root / "index", queries, k=10, threads=1), root / "vectors"


def test_exact_returns_lucenes_top_10_from_the_vector_files(corpus_and_queries, lucene_top10):
    _, queries, _ = corpus_and_queries
    lucene, vectors = lucene_top10
    assert ExactImpactSearcher(read_vector_collection(vectors)).search(queries, 10) == lucene


def test_seismic_matches_lucenes_ndcg_at_10(corpus_and_queries, lucene_top10):
    docs, queries, qrels = corpus_and_queries
    lucene, _ = lucene_top10
    seismic = SeismicImpactSearcher(docs.items(), SEISMIC).search(queries, 10)
    ndcg = {name: evaluate(qrels, run)["ndcg@10"] for name, run in (("lucene", lucene), ("seismic", seismic))}
    assert abs(ndcg["seismic"] - ndcg["lucene"]) <= SEISMIC_NDCG_TOLERANCE, ndcg
    same = sum(seismic[qid] == lucene[qid] for qid in queries)
    assert same >= 0.9 * len(queries), f"{same}/{len(queries)} queries with Lucene's top 10"


def test_seismic_with_every_posting_and_no_pruning_is_exact(corpus_and_queries, lucene_top10):
    """No posting pruned, summaries that keep all of each block's mass (upper bounds, so a block is skipped only
    when it cannot reach the k-th score), every query term read: Seismic's run is the exact one."""
    docs, queries, _ = corpus_and_queries
    lucene, _ = lucene_top10
    exact_settings = {**SEISMIC, "n_postings": 100_000, "summary_energy": 1.0, "query_cut": 1_000, "heap_factor": 1.0}
    assert SeismicImpactSearcher(docs.items(), exact_settings).search(queries, 10) == lucene


def test_seismic_skips_empty_documents_and_queries_and_unknown_terms():
    searcher = SeismicImpactSearcher([("a", {"x": 3, "y": 1}), ("empty", {}), ("b", {"y": 2})], SEISMIC)
    run = searcher.search({"q": {"y": 1, "unseen": 5}, "nothing": {}, "unseen": {"zzz": 1}}, k=10)
    assert run == {"q": [("b", 2.0), ("a", 1.0)], "nothing": [], "unseen": []}


def test_self_hits_are_dropped_and_k_hits_kept():
    run = {"a": [("a", 9.0), ("b", 5.0), ("c", 1.0)], "b": [("a", 3.0), ("c", 2.0), ("d", 1.0)]}
    assert without_self_hits(run, k=2) == {"a": [("b", 5.0), ("c", 1.0)], "b": [("a", 3.0), ("c", 2.0)]}


def test_collection_run_asks_for_one_more_hit_only_under_the_rule():
    asked = []

    def search(k):
        asked.append(k)
        return {"q": [("q", 2.0), ("d", 1.0)]}

    plain = Collection("c", "test", {}, {}, {}, "f")
    assert retrieval.collection_run(plain, search, 5) == {"q": [("q", 2.0), ("d", 1.0)]}
    ruled = Collection("c", "test", {}, {}, {}, "f", ignore_identical_ids=True)
    assert retrieval.collection_run(ruled, search, 5) == {"q": [("d", 1.0)]} and asked == [5, 6]


# --- the engines' evaluations on a tiny random encoder --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_encoder(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    return SpladeEncoder(BertForMaskedLM(config).eval())


def self_retrieving_collection(ignore_identical_ids: bool) -> Collection:
    """Queries that are documents (ArguAna's layout): each query's text is its own document's."""
    rng = random.Random(1)
    corpus = {f"d{i}": " ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for i in range(30)}
    queries = {doc_id: corpus[doc_id] for doc_id in list(corpus)[:8]}
    qrels = {qid: {f"d{(int(qid[1:]) + 1) % 30}": 1} for qid in queries}
    return Collection("args", "test", corpus, queries, qrels, "args", ignore_identical_ids=ignore_identical_ids)


# Seismic where it is exact (see test_seismic_with_every_posting_and_no_pruning_is_exact), so that the runs
# of the three evaluations can be compared hit for hit.
ENGINE_OVERRIDES = {"lucene": [], "exact": [], "seismic": ["index.seismic.summary_energy=1.0", "index.seismic.heap_factor=1.0",
                                                           "index.seismic.query_cut=1000"]}


@pytest.fixture(scope="module")
def engine_runs(tiny_encoder, tokenizer, tmp_path_factory):
    """{(engine, rule): (summary, run read back from run.trec)} for the three sparse engines, k = 5."""
    results = {}
    for engine, overrides in ENGINE_OVERRIDES.items():
        settings = evaluation_settings(validate(composed("experiment=smoke", f"index={engine}", "eval.k=5", *overrides)))
        for rule in (False, True):
            folder = tmp_path_factory.mktemp(f"{engine}-{rule}")
            summary = SEARCH_ENGINES[engine](tiny_encoder, tokenizer, self_retrieving_collection(rule), settings, folder)
            results[engine, rule] = summary, read_trec_run(folder / retrieval.RUN_FILE)
    return results


def test_every_engine_reports_metrics_sparsity_and_the_three_timings(engine_runs):
    for (engine, _), (summary, _) in engine_runs.items():
        assert set(summary) == {"metrics", "sparsity", "timing"}, engine
        assert set(summary["timing"]) == {"encode_s", "index_s", "search_s"}, engine


def test_exact_and_seismic_write_lucenes_run(engine_runs):
    for rule in (False, True):
        lucene = engine_runs["lucene", rule][1]
        assert engine_runs["exact", rule][1] == lucene
        assert engine_runs["seismic", rule][1] == lucene


def test_every_engine_drops_a_query_retrieving_itself_and_keeps_k_hits(engine_runs):
    for engine in ("lucene", "exact", "seismic"):
        with_self, ruled = engine_runs[engine, False][1], engine_runs[engine, True][1]
        # The rule has work to do: a random encoder ranks 2 of the 8 queries' own documents in their top 5.
        assert sum(qid in dict(hits) for qid, hits in with_self.items()) >= 1, engine
        for qid, hits in ruled.items():
            assert len(hits) == 5 and qid not in dict(hits), (engine, qid)
            # The ruled run is the unruled one without the self hit, filled up from the sixth place.
            others = [hit for hit in with_self[qid] if hit[0] != qid]
            assert hits[:len(others)] == others, (engine, qid)


def test_an_unknown_engine_names_the_key_and_the_registered_ones():
    with pytest.raises(ConfigError) as raised:
        validate(composed("index.name=bogus"))
    message = str(raised.value)
    assert "index.name" in message and all(name in message for name in ("exact", "faiss", "lucene", "seismic"))


def test_a_seismic_parameter_the_library_does_not_take_names_the_key():
    with pytest.raises(ConfigError, match="index.seismic.n_posting"):
        validate(composed("index=seismic", "+index.seismic.n_posting=10"))


def test_registering_the_engines_does_not_import_seismic():
    import subprocess
    import sys

    code = ("import sys; from splade_peft.index.config import SEARCH_ENGINES; SEARCH_ENGINES.names(); "
            "print('seismic' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_approximate_engines_do_not_share_a_cached_stage_with_lucene():
    cfg = validate(composed("experiment=smoke", "index=seismic"))
    plain = Collection("c", "test", {}, {}, {}, "f")
    lucene = retrieval.evaluation_inputs(evaluation_settings(validate(composed("experiment=smoke"))), plain, "m")
    seismic = retrieval.evaluation_inputs(evaluation_settings(cfg), plain, "m")
    assert "engine" not in lucene  # Lucene's fingerprints are those of its stages cached before engines existed
    assert seismic["engine"] == "seismic" and seismic["seismic"] == SEISMIC


@pytest.mark.slow
def test_an_exact_smoke_job_runs_end_to_end(tmp_path):
    completed = run_cli(tmp_path, "experiment=smoke", "index=exact", "logger=none")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "completed" and 0.0 <= results["metrics"]["average"]["ndcg@10"] <= 1.0
    assert set(results["timing"]) >= {"encode_s", "index_s", "search_s"}
    eval_dir = tmp_path / "eval" / "stdlib-docstrings"
    assert len((eval_dir / "run.trec").read_text().splitlines()) > 100 and not (eval_dir / "index").exists()


@pytest.mark.slow  # about 50 s: four JVM starts (index, search, JVM timing, pyserini's searcher)
def test_the_engines_benchmark_compares_the_three_on_a_synthetic_corpus():
    from bench.engines import SyntheticCorpus, compare_engines, engines_markdown

    corpus = SyntheticCorpus(300, seed=0)
    assert 100 <= corpus.description()["doc_nnz_mean"] <= 200 and all(20 <= len(query) <= 40 for query in
                                                                       corpus.queries(5, seed=1).values())
    compared = compare_engines(corpus, corpus.queries(8, seed=1), None, SEISMIC, threads=1, latency_queries=3)
    rows = compared["engines"]
    assert list(rows) == ["lucene", "seismic", "exact"]
    assert rows["lucene"]["quality"] == rows["exact"]["quality"] == {"overlap@10": 1.0, "recall_of_exact@1000": 1.0}
    assert rows["seismic"]["quality"]["overlap@10"] >= 0.9 and rows["lucene"]["qps_vs_lucene"] == 1.0
    section = {"engines": {"k": 1000, "threads": 1, "seismic_parameters": SEISMIC, "scifact": compared,
                           "synthetic": {**corpus.description(), "queries": 8, **compared}}}
    assert "Synthetic corpus: 300 documents (size used" in "\n".join(engines_markdown(section))
