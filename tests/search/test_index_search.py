"""Lucene impact index vs exact dot products, BM25 on a tiny corpus, TREC runs, atomic index builds.

Every search runs Anserini in a `java` subprocess (about 2-3 s each), so the tests batch their queries.
"""

import json
import random
import subprocess
import sys

import pytest

from splade_peft.training.teacher_scoring import bm25_pair_scores
from splade_peft.errors import IndexingError
from splade_peft.index.impact import build_impact_index, quantize, write_vector_collection
from splade_peft.search import anserini
from splade_peft.search.bm25 import bm25_search, build_bm25_index
from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import read_trec_run, write_trec_run

VOCABULARY = ["the", "fox", "##ing", "##s", "c++", "[unused1]", "[CLS]", "ünï", "Apple", "apple", "x-ray", "3.14",
              "a/b", "q?"]
EVERYWHERE = "everywhere"  # in every non-empty document: idf 0, dropped by pyserini's default min_idf
EMPTY_DOCS = {"empty-1": {}, "empty-2": {"fox": 0.001}}  # the second quantises to nothing
K = 8  # small enough that ties straddle the cut-off
LUCENE_MAX_CLAUSES = 1_024  # Lucene's default limit on the clauses (distinct terms) of one query
BM25_CORPUS = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "split": "Python's str.split() method: splits a string (by whitespace) into a list of words.",
    "vitd": "Vitamin D deficiency is associated with an increased risk of hip fractures in older adults.",
    "blank": " \t\n",  # left out: Anserini would skip it
    "punct": "?!? ... ///",  # indexed with no terms
}


def random_vector(rng: random.Random) -> dict[str, float]:
    terms = rng.sample(VOCABULARY, rng.randint(1, 6))
    return {term: rng.choice([0.1, 0.2, 0.5, rng.uniform(0.05, 3.0)]) for term in terms}


@pytest.fixture(scope="module")
def impact_corpus() -> dict[str, dict[str, int]]:
    rng = random.Random(7)
    docs = {f"d{i:03d}": quantize({**random_vector(rng), EVERYWHERE: rng.choice([0.1, 0.3])}, 10) for i in range(60)}
    return {**docs, **{doc_id: quantize(vector, 10) for doc_id, vector in EMPTY_DOCS.items()}}


@pytest.fixture(scope="module")
def impact_index(impact_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("impact")
    written = write_vector_collection(impact_corpus.items(), root / "collection", shards=3)
    stats = build_impact_index(root / "collection", root / "index", threads=2)
    return root, written, stats


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("bm25")
    stats = build_bm25_index(BM25_CORPUS, root / "index", threads=1)
    return root, stats


def test_quantize_rounds_and_drops_non_positive():
    assert quantize({"a": 0.149, "b": 0.151, "c": -1.0, "d": 0.04}, 10) == {"a": 1, "b": 2}


def test_collection_rejects_unquantised_weights_and_whitespace_terms(tmp_path):
    with pytest.raises(TypeError, match="quantize"):
        write_vector_collection([("d", {"a": 0.5})], tmp_path / "c", shards=1)
    with pytest.raises(IndexingError, match="whitespace"):
        write_vector_collection([("d", {"a b": 3})], tmp_path / "c", shards=1)
    assert not list(tmp_path.iterdir())  # neither the collection nor its staging folder


def test_impact_build_counts_documents_and_cleans_up(impact_index, impact_corpus):
    root, written, stats = impact_index
    assert written == stats.documents == len(impact_corpus) - len(EMPTY_DOCS)
    assert sorted(p.name for p in (root / "collection").iterdir()) == [f"part-0000{i}.jsonl" for i in range(3)]
    assert sorted(p.name for p in root.iterdir()) == ["collection", "index"]


def test_failing_build_raises_and_leaves_no_index(tmp_path):
    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "part-00000.jsonl").write_text('{"id": "a", "contents": "", "vector": {"x": 1}}\n'
                                                 '{"id": "b", "contents": "", "vector": {"x": \n')
    with pytest.raises(IndexingError, match="indexed 0 of 2"):
        build_impact_index(collection, tmp_path / "index", threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collection"]


def test_lucene_impact_search_equals_exact_dot_product(impact_index, impact_corpus):
    root, _, _ = impact_index
    rng = random.Random(11)
    queries = {f"q{i}": quantize(random_vector(rng), 10) for i in range(25)}
    queries |= {"everywhere-only": {EVERYWHERE: 2}, "empty": {}, "unknown-term": {"zzz": 5}, "zero-weight": {"fox": 0},
                "common+rare": {EVERYWHERE: 1, "c++": 40, "[unused1]": 3}}

    lucene = impact_search(root / "index", queries, k=K, threads=2)
    exact = ExactImpactSearcher(impact_corpus.items()).search(queries, k=K)

    assert lucene == exact  # same scores, same order, ties included (score desc, then id asc)
    assert len(lucene["everywhere-only"]) == K  # the idf-0 term was not dropped
    assert lucene["empty"] == lucene["unknown-term"] == lucene["zero-weight"] == []
    assert not any(doc in EMPTY_DOCS for hits in lucene.values() for doc, _ in hits)
    assert any(len({score for _, score in hits}) < len(hits) for hits in lucene.values())  # ties were exercised


def test_impact_search_takes_queries_wider_than_lucenes_clause_limit(impact_index, impact_corpus, monkeypatch):
    root, _, _ = impact_index
    # An untrained model puts weight on (nearly) the whole vocabulary: one clause per distinct term.
    known = {term: 2 + i for i, term in enumerate([*VOCABULARY, EVERYWHERE])}
    wide = {f"unseen-{i}": 1 for i in range(5_000 - len(known))} | known
    assert len(wide) == 5_000 > LUCENE_MAX_CLAUSES
    queries = {"wide": wide, "empty": {}, "all-known": known}
    monkeypatch.setattr(anserini, "MAX_BATCH_CHARS", 1)  # one java call per query: the batching path too

    lucene = impact_search(root / "index", queries, k=K, threads=1)

    assert lucene == ExactImpactSearcher(impact_corpus.items()).search(queries, k=K)
    assert len(lucene["wide"]) == K and lucene["wide"] == lucene["all-known"]


def test_impact_search_reports_java_failures(tmp_path):
    (tmp_path / "not-an-index").mkdir()
    with pytest.raises(IndexingError, match="SearchCollection failed.*no segments"):
        impact_search(tmp_path / "not-an-index", {"q": {"fox": 1}}, k=3, threads=1)


def test_bm25_ranks_matching_doc_first_with_punctuation_heavy_queries(bm25_index):
    root, stats = bm25_index
    assert stats.documents == 4
    assert sorted(p.name for p in root.iterdir()) == ["index"]
    queries = {
        "split": 'How does str.split() work? (Python) "whitespace"',
        "vitd": 'Is "vitamin D" linked to fractures: yes/no?',
        "fox": r"fox* ~dog^2 [a TO b] {x} \ ! && || -lazy +quick",
        "unbalanced": 'brown" (fox: [dog {jumps \\',  # Lucene's query parser would reject this
        "tabs": "quick\tbrown\nfox\r\njumps\x0b",  # must not split the topic line or field
        "stop": "AND OR NOT the",
        "punct": "???",
        "blank": " \t\n",
        "empty": "",
    }

    run = bm25_search(root / "index", queries, k=3, threads=2)

    assert list(run) == list(queries)
    assert {qid: hits[0][0] for qid, hits in run.items() if hits} == {
        "split": "split", "vitd": "vitd", "fox": "fox", "unbalanced": "fox", "tabs": "fox"}
    assert run["stop"] == run["punct"] == run["blank"] == run["empty"] == []
    assert all(hits == sorted(hits, key=lambda hit: -hit[1]) for hits in run.values())


def test_bm25_teacher_scores_every_listed_pair_and_zero_only_without_a_shared_term(bm25_index):
    root, stats = bm25_index
    queries = {"q-fox": "lazy brown fox", "q-vitd": "vitamin fractures in adults"}
    wanted = {"q-fox": ["vitd", "punct", "fox"], "q-vitd": ["fox", "vitd", "split"]}

    scores = bm25_pair_scores(root / "index", stats.documents, queries, wanted, threads=1, queries_per_search=1)

    full = bm25_search(root / "index", queries, k=stats.documents, threads=1)
    assert scores["q-fox"] == {"fox": dict(full["q-fox"])["fox"], "vitd": 0.0, "punct": 0.0}
    assert scores["q-vitd"]["vitd"] == dict(full["q-vitd"])["vitd"] > 0
    # "in" is a stop word and the fox sentence shares no other term: no match, so exactly 0
    assert scores["q-vitd"]["fox"] == scores["q-vitd"]["split"] == 0.0


def test_searches_start_no_jvm_in_the_python_process(impact_index, bm25_index):
    # A fresh interpreter: what other tests imported cannot mask (or fake) a JVM started by the searches.
    script = """if True:
        import json, sys
        from splade_peft.search.bm25 import bm25_search
        from splade_peft.search.lucene import impact_search
        impact = impact_search(sys.argv[1], {"q": {"fox": 1, "c++": 2}}, k=3, threads=1)
        bm25 = bm25_search(sys.argv[2], {"q": "quick fox?"}, k=3, threads=1)
        loaded = [name for name in ("jnius", "jnius_config", "pyserini") if name in sys.modules]
        print(json.dumps({"hits": [len(impact["q"]), len(bm25["q"])], "loaded": loaded}))
    """
    indexes = [str(impact_index[0] / "index"), str(bm25_index[0] / "index")]
    finished = subprocess.run([sys.executable, "-c", script, *indexes], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["hits"] == [3, 1]
    assert report["loaded"] == []  # no pyjnius (no in-process JVM), not even pyserini's slow import


def test_trec_run_round_trip(tmp_path):
    run = {"q1": [("doc#1", 2_000_000.0), ("d/2", 0.1 + 0.2), ("ü", -1.5)], "q_2": [("a", 3.0)]}
    path = tmp_path / "runs" / "run.trec"
    write_trec_run({**run, "no-hits": []}, path, tag="splade")
    assert read_trec_run(path) == run
    assert [p.name for p in path.parent.iterdir()] == ["run.trec"]
    assert path.read_text().splitlines()[0] == "q1 Q0 doc#1 1 2000000.0 splade"
