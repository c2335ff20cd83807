"""Exact impact search: integer dot products with scipy, ranked the way the Lucene impact index ranks.

Ordering: score descending, ties broken by document id ascending (code-point order, which equals the
UTF-8 byte order Anserini sorts ids by). Only documents sharing a positive-weight term with the query
are returned, as in Lucene, so documents with empty vectors never appear.
"""

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from scipy import sparse

from splade_peft.errors import IndexingError
from splade_peft.index.impact import positive_impacts
from splade_peft.search.runs import Run

# Queries multiplied at once: the product holds up to this many rows of per-document scores.
_QUERY_BATCH = 128


class ExactImpactSearcher:
    """All documents in memory as a CSR matrix; `search` returns the same run as `impact_search`."""

    def __init__(self, docs: Iterable[tuple[str, Mapping[str, int]]]):
        by_id = dict(_unique(docs))
        # Rows in id order, so "lower row" is the tie-break "lower id".
        self._doc_ids = sorted(by_id)
        self._vocabulary: dict[str, int] = {}
        self._terms_by_doc = self._matrix([by_id[doc_id] for doc_id in self._doc_ids], grow=True).T.tocsr()

    def search(self, queries: Mapping[str, Mapping[str, int]], k: int) -> Run:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        qids = list(queries)
        run: Run = {}
        for start in range(0, len(qids), _QUERY_BATCH):
            batch = qids[start:start + _QUERY_BATCH]
            scores = (self._matrix([queries[qid] for qid in batch], grow=False) @ self._terms_by_doc).tocsr()
            for row, qid in enumerate(batch):
                docs = scores.indices[scores.indptr[row]:scores.indptr[row + 1]]
                values = scores.data[scores.indptr[row]:scores.indptr[row + 1]]
                run[qid] = [(self._doc_ids[doc], score) for doc, score in _top_k(docs, values, k)]
        return run

    def _matrix(self, vectors: list[Mapping[str, int]], grow: bool) -> sparse.csr_matrix:
        """One row per vector; with grow=False terms outside the document vocabulary are ignored."""
        indptr, columns, weights = [0], [], []
        for vector in vectors:
            for term, weight in positive_impacts(vector).items():
                column = self._vocabulary.setdefault(term, len(self._vocabulary)) if grow else self._vocabulary.get(term)
                if column is not None:
                    columns.append(column)
                    weights.append(weight)
            indptr.append(len(columns))
        # int64: scores are exact integer dot products.
        return sparse.csr_matrix((np.array(weights, dtype=np.int64), np.array(columns, dtype=np.int64), indptr),
                                 shape=(len(vectors), len(self._vocabulary)))


def _top_k(docs: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(document row, score) of the k best, by score descending then row ascending."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        best = positive[np.argpartition(-scores[positive], k - 1)[:k]]
        threshold = scores[best].min()
        above = positive[scores[positive] > threshold]
        # argpartition picks arbitrarily among documents tied at the cut-off: refill by row instead.
        tied = positive[scores[positive] == threshold]
        tied = tied[np.argsort(docs[tied], kind="stable")][:k - len(above)]
        positive = np.concatenate([above, tied])
    order = positive[np.lexsort((docs[positive], -scores[positive]))]
    return [(int(docs[i]), float(scores[i])) for i in order]


def _unique(docs: Iterable[tuple[str, Mapping[str, int]]]) -> Iterator[tuple[str, Mapping[str, int]]]:
    seen: set[str] = set()
    for doc_id, vector in docs:
        if doc_id in seen:
            raise IndexingError(f"document id {doc_id!r} occurs twice -- ids must be unique")
        seen.add(doc_id)
        yield doc_id, vector
