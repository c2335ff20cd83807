"""Metric values on hand-checked examples (research-notes section 8) agree with what the project reports."""

import math
import random

import pytest
import pytrec_eval
from ir_measures import RR, nDCG

from splade_peft.evaluation.metrics import evaluate, per_query
from splade_peft.results import macro_average
from splade_peft.index.sparsity import SparsityCounter, sparsity_report


def ranked(*doc_ids: str) -> list[tuple[str, float]]:
    return [(doc_id, float(len(doc_ids) - rank)) for rank, doc_id in enumerate(doc_ids)]


def test_mrr_worked_example_first_relevant_at_ranks_1_3_5():
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}, "q3": {"e": 1}}
    run = {"q1": ranked("a", "b", "c"), "q2": ranked("a", "b", "c", "d"), "q3": ranked("a", "b", "c", "d", "e")}
    value = evaluate(qrels, run, {"mrr@5": RR @ 5})["mrr@5"]
    assert value == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)
    assert round(value, 3) == 0.511


def test_ndcg_worked_example_graded_relevance_1_0_3_4():
    qrels = {"q": {"d1": 1, "d2": 0, "d3": 3, "d4": 4}}
    value = evaluate(qrels, {"q": ranked("d1", "d2", "d3", "d4")}, {"ndcg@2": nDCG @ 2})["ndcg@2"]
    assert value == pytest.approx(1 / (4 + 3 / math.log2(3)))
    assert round(value, 4) == 0.1697


def test_default_measures_on_a_small_run():
    qrels = {"q1": {"a": 1, "z": 1}, "q2": {"b": 2}}
    metrics = evaluate(qrels, {"q1": ranked("x", "a"), "q2": ranked("b")})
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["recall@1000"] == pytest.approx((1 / 2 + 1) / 2)
    assert set(metrics) == {"mrr@10", "recall@100", "recall@1000", "ndcg@10"}


def test_a_judged_query_missing_from_the_run_counts_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert evaluate(qrels, {"q1": ranked("a")})["mrr@10"] == pytest.approx(0.5)


def test_queries_without_relevant_documents_are_not_averaged():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    assert evaluate(qrels, {"q1": ranked("a")})["mrr@10"] == pytest.approx(1.0)


def test_macro_average_over_datasets():
    assert macro_average({"x": {"ndcg@10": 0.2}, "y": {"ndcg@10": 0.4}}) == {"ndcg@10": pytest.approx(0.3)}


def test_sparsity_report_counts_postings_and_expected_flops():
    documents = SparsityCounter().add_all([{"a": 1, "b": 2}, {"a": 3}, {}])
    queries = SparsityCounter().add_all([{"a": 5}, {"c": 1}])
    report = sparsity_report(documents, queries)
    assert report["doc_nnz_mean"] == pytest.approx(1.0)
    assert report["empty_docs"] == 1
    # P(q uses a) = 1/2, P(d uses a) = 2/3; c is in no document.
    assert report["flops"] == pytest.approx(0.5 * 2 / 3)


def test_every_measure_breaks_score_ties_as_trec_eval_does():
    """Score descending, then document id descending (trec_eval's order); ir-measures' RR and nDCG providers
    order tied documents oppositely, so both get the one order here: d, c, b, a."""
    qrels = {"q1": {"c": 1}, "q2": {"a": 1}}
    run = {"q1": [(doc, 1.0) for doc in "bdac"], "q2": [("z", 2.0)] + [(doc, 1.0) for doc in "cab"]}
    metrics = per_query(qrels, run)
    assert metrics["mrr@10"] == {"q1": pytest.approx(1 / 2), "q2": pytest.approx(1 / 4)}
    assert metrics["ndcg@10"] == {"q1": pytest.approx(1 / math.log2(3)), "q2": pytest.approx(1 / math.log2(5))}


def test_a_tied_run_scores_as_trec_eval_scores_it():
    """Quantised impacts tie often: every query's figure equals trec_eval's (pytrec_eval) on a run full of ties."""
    rng = random.Random(0)
    documents = [f"doc{i:03d}" for i in range(60)]
    qrels = {f"q{q}": {doc: rng.choice([1, 1, 2, 3]) for doc in rng.sample(documents, 4)} for q in range(30)}
    run = {qid: [(doc, float(rng.randint(1, 4))) for doc in rng.sample(documents, 40)] for qid in qrels}
    ours = per_query(qrels, run)
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", "ndcg_cut.10", "recall.100"}).evaluate(
        {qid: dict(hits) for qid, hits in run.items()})
    for qid in qrels:
        assert ours["mrr@10"][qid] == pytest.approx(trec[qid]["recip_rank"] if trec[qid]["recip_rank"] >= 0.1 else 0.0)
        assert ours["ndcg@10"][qid] == pytest.approx(trec[qid]["ndcg_cut_10"])
        assert ours["recall@100"][qid] == pytest.approx(trec[qid]["recall_100"])
