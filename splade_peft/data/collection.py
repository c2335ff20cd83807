"""A retrieval collection: corpus, judged queries and graded judgements of one split."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Collection:
    name: str
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    fingerprint: str
    min_relevant_grade: int = 1  # the lowest grade MRR and recall count as relevant (TREC DL: 2)
    # BEIR's convention for ArguAna and Quora, whose queries are also documents: a query retrieving its own
    # id is not a hit, and the engines drop it from the run before it is scored.
    ignore_identical_ids: bool = False
