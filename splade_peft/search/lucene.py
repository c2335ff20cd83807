"""Search a Lucene impact index with pre-encoded `{term: int}` queries (Anserini in a subprocess).

Anserini's SearchCollection has no topic format that carries term weights for an impact search; its
pre-tokenized route repeats each term as often as its weight ("fox fox fox c++"), splits the text at
whitespace (no lower-casing, stemming or stop words: `##ing`, `c++`, `[unused1]` stay as they are),
counts the repetitions back into per-term boosts and scores boost x stored impact. So the score is
exactly the integer dot product, and no term is dropped for a low idf (the idf plays no part).
"""

import re
from collections.abc import Mapping
from pathlib import Path

from splade_peft.errors import IndexingError
from splade_peft.index.impact import positive_impacts
from splade_peft.search.anserini import search_collection
from splade_peft.search.runs import Run

# The characters Java's whitespace tokenizer splits at (Character.isWhitespace). The indexer refuses
# terms containing any of them, so such a query term cannot match; it is left out, not split.
_JAVA_WHITESPACE = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f \u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000]")
# Lucene's whitespace tokenizer cuts tokens longer than this into pieces, at indexing time too, so
# the index holds no longer term: such a query term cannot match and is left out, not cut up.
_MAX_TOKEN_CHARS = 255


def impact_search(index_dir: Path, queries: Mapping[str, Mapping[str, int]], k: int, threads: int) -> Run:
    """Top-k documents per query by integer dot product; empty queries get an empty list.

    Same ordering as `ExactImpactSearcher`: score descending, ties by document id ascending.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not Path(index_dir).is_dir():
        raise IndexingError(f"impact index {index_dir} does not exist -- build it with build_impact_index()")
    impacts = {qid: _searchable(positive_impacts(query)) for qid, query in queries.items()}
    # Empty queries are not sent: there is nothing to match.
    qids = [qid for qid, query in impacts.items() if query]
    # A generator: the (possibly huge) texts are built one at a time as they are written out.
    texts = (pretokenized(impacts[qid]) for qid in qids)
    hits = search_collection(index_dir, texts, k, threads, ["-impact", "-pretokenized"])
    by_qid = {qid: hits.get(position, []) for position, qid in enumerate(qids)}
    return {qid: _ranked(by_qid.get(qid, [])) for qid in queries}


def pretokenized(impacts: Mapping[str, int]) -> str:
    """`{"fox": 3, "c++": 1}` -> "fox fox fox c++": Anserini turns the repetition count back into the weight.

    Terms must be whitespace-free (see `_searchable`).
    """
    return " ".join(" ".join([term] * weight) for term, weight in impacts.items())


def _searchable(impacts: dict[str, int]) -> dict[str, int]:
    """The entries whose term can be in the index (and would survive Anserini's whitespace split intact)."""
    return {term: weight for term, weight in impacts.items()
            if 0 < len(term) <= _MAX_TOKEN_CHARS and not _JAVA_WHITESPACE.search(term)}


def _ranked(hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
    # Anserini rounds scores to 1e-4 and subtracts 1e-6 per tie to make ranks explicit; impact scores
    # are integer dot products (exact in float32 up to 2**24), so rounding restores the true score.
    scored = [(docid, float(round(score))) for docid, score in hits]
    return sorted(scored, key=lambda hit: (-hit[1], hit[0]))
