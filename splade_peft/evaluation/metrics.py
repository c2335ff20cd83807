"""Retrieval metrics through ir-measures, averaged over every judged query (a query the run misses scores 0).

Every measure sees one ranking per query in trec_eval's order: score descending, then document id descending
(trec_eval sorts ties by docno in reverse, so figures match published ones). ir-measures' providers break
score ties each their own way (RR@10 and nDCG@10 ranked tied documents in opposite orders), so ties are
broken here and each document reaches ir-measures with a score that is its rank.
"""

from collections.abc import Mapping

import ir_measures
from ir_measures import Qrel, ScoredDoc, nDCG, R, RR


def standard_measures(min_relevant_grade: int = 1) -> dict:
    """Names as they appear in results.json, and the ir-measures measure behind each.

    nDCG uses the grades as they are; MRR and recall count a document relevant from `min_relevant_grade`
    (TREC DL passage qrels grade 1 as "related", and their official MRR and recall count grades >= 2).
    """
    return {
        "mrr@10": RR(rel=min_relevant_grade) @ 10,
        "recall@100": R(rel=min_relevant_grade) @ 100,
        "recall@1000": R(rel=min_relevant_grade) @ 1000,
        "ndcg@10": nDCG @ 10,
    }


MEASURES = standard_measures()

Run = Mapping[str, list[tuple[str, float]]]
Qrels = Mapping[str, Mapping[str, int]]


def evaluated_queries(qrels: Qrels, min_relevant_grade: int = 1) -> list[str]:
    """Queries with at least one relevant document: the denominator of every average."""
    return sorted(qid for qid, judged in qrels.items() if any(grade >= min_relevant_grade for grade in judged.values()))


def per_query(qrels: Qrels, run: Run, measures: Mapping = MEASURES,
              min_relevant_grade: int = 1) -> dict[str, dict[str, float]]:
    """{metric: {qid: value}} with 0 for judged queries the run has no documents for.

    ir-measures (like trec_eval without -c) averages only over queries present in the run, so a
    model that returns nothing for hard queries would score higher; filling in zeros prevents that.
    """
    queries = evaluated_queries(qrels, min_relevant_grade)
    qrels_rows = [Qrel(qid, doc_id, grade) for qid in queries for doc_id, grade in qrels[qid].items()]
    run_rows = [row for qid in queries for row in ranked(qid, run.get(qid, []))]
    values = {name: dict.fromkeys(queries, 0.0) for name in measures}
    by_measure = {measure: name for name, measure in measures.items()}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels_rows, run_rows):
        values[by_measure[metric.measure]][metric.query_id] = metric.value
    return values


def ranked(qid: str, hits: list[tuple[str, float]]) -> list[ScoredDoc]:
    """The hits in trec_eval's order, scored n, n-1, ..., 1 so that no measure can reorder them."""
    ordered = sorted(hits, key=lambda hit: (hit[1], hit[0]), reverse=True)
    return [ScoredDoc(qid, doc_id, float(len(ordered) - rank)) for rank, (doc_id, _) in enumerate(ordered)]


def evaluate(qrels: Qrels, run: Run, measures: Mapping | None = None, min_relevant_grade: int = 1) -> dict[str, float]:
    by_metric = per_query(qrels, run, measures or standard_measures(min_relevant_grade), min_relevant_grade)
    return {name: sum(by_query.values()) / len(by_query) for name, by_query in by_metric.items()}
