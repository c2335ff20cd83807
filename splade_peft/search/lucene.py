"""Search a Lucene impact index with pre-encoded `{term: int}` queries through pyserini."""

from collections.abc import Mapping
from pathlib import Path

from splade_peft.errors import IndexingError
from splade_peft.index.impact import positive_impacts
from splade_peft.index.pyserini_env import import_pyserini
from splade_peft.search.runs import Run

# pyserini keeps a query term only if its idf = log(N / df) exceeds min_idf; with the default 0 a
# term present in every document (idf 0) is silently dropped, so it would disagree with a dot product.
_KEEP_EVERY_TERM = -1


class _PassThroughEncoder:
    """pyserini calls `encode(query)` on each query; ours are already `{term: int}` dicts."""

    def encode(self, query: dict[str, int]) -> dict[str, int]:
        return query


def impact_search(index_dir: Path, queries: Mapping[str, Mapping[str, int]], k: int, threads: int) -> Run:
    """Top-k documents per query by integer dot product; empty queries get an empty list.

    Same ordering as `ExactImpactSearcher`: score descending, ties by document id ascending.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not Path(index_dir).is_dir():
        raise IndexingError(f"impact index {index_dir} does not exist -- build it with build_impact_index()")
    lucene = import_pyserini("pyserini.search.lucene")
    encoded = {qid: positive_impacts(query) for qid, query in queries.items()}
    # Empty queries are not sent: there is nothing to match.
    qids = [qid for qid, query in encoded.items() if query]
    searcher = lucene.LuceneImpactSearcher(str(index_dir), _PassThroughEncoder(), min_idf=_KEEP_EVERY_TERM)
    try:
        hits = searcher.batch_search([encoded[qid] for qid in qids], qids, k=k, threads=threads) if qids else {}
    finally:
        searcher.close()
    return {qid: _ranked(hits.get(qid, [])) for qid in queries}


def _ranked(hits: list) -> list[tuple[str, float]]:
    """`hits`: pyserini's Java result objects (docid, score)."""
    # Anserini rounds scores to 1e-4 and subtracts 1e-6 per tie to make ranks explicit; impact scores
    # are integer dot products (exact in float32 up to 2**24), so rounding restores the true score.
    scored = [(hit.docid, float(round(hit.score))) for hit in hits]
    return sorted(scored, key=lambda hit: (-hit[1], hit[0]))
