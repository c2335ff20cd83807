"""Sparsity of encoded vectors: postings per document, terms per query, and expected FLOPS per pair."""

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping


class SparsityCounter:
    """Accumulates, in one streaming pass, how many vectors use each term and how long the vectors are."""

    def __init__(self):
        self.term_frequency: Counter = Counter()
        self.lengths: list[int] = []

    def add(self, vector: Mapping[str, float]) -> None:
        self.term_frequency.update(vector.keys())
        self.lengths.append(len(vector))

    def add_all(self, vectors: Iterable[Mapping[str, float]]) -> "SparsityCounter":
        for vector in vectors:
            self.add(vector)
        return self

    def active_fraction(self) -> dict[str, float]:
        return {term: count / len(self.lengths) for term, count in self.term_frequency.items()}


def sparsity_report(documents: SparsityCounter, queries: SparsityCounter) -> dict[str, float]:
    """FLOPS = sum over terms of P(query uses term) * P(document uses term) (Paria et al., SPLADE):
    the expected number of multiply-adds to score one query against one document."""
    document_fraction, query_fraction = documents.active_fraction(), queries.active_fraction()
    expected_flops = sum(p * document_fraction.get(term, 0.0) for term, p in query_fraction.items())
    return {
        "doc_nnz_mean": statistics.fmean(documents.lengths),
        "doc_nnz_median": statistics.median(documents.lengths),
        "query_nnz_mean": statistics.fmean(queries.lengths),
        "query_nnz_median": statistics.median(queries.lengths),
        "empty_docs": sum(1 for n in documents.lengths if n == 0),
        "empty_queries": sum(1 for n in queries.lengths if n == 0),
        "flops": expected_flops,
    }
