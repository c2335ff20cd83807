"""BM25 reference on raw text: Anserini's default analyzer (English stop words, Porter stemming).

Queries go through pyserini's LuceneSearcher, whose default bag-of-words query generator analyses
the text into terms without Lucene's query parser, so `?`, `:`, `(`, `"`, `/` need no escaping.
"""

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from splade_peft.errors import IndexingError
from splade_peft.index.impact import IndexStats, run_anserini_indexer, write_jsonl_shards
from splade_peft.index.pyserini_env import import_pyserini
from splade_peft.search.runs import Run

# Java's String.trim() strips every char <= U+0020; Anserini skips a document whose text trims to "".
_JAVA_TRIMMED = "".join(chr(code) for code in range(0x21))


def build_bm25_index(corpus: Mapping[str, str], index_dir: Path, threads: int) -> IndexStats:
    """Index `{doc_id: text}` (blank texts are left out: they cannot match and Anserini would skip them).

    Stores no positions, document vectors or raw text: BM25 needs none of them.
    """
    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=index_dir.parent, prefix=index_dir.name + ".collection.") as scratch:
        collection_dir = Path(scratch) / "collection"
        write_jsonl_shards(_text_records(corpus), collection_dir, shards=max(1, threads))
        return run_anserini_indexer("JsonCollection", collection_dir, index_dir, threads, [])


def bm25_search(index_dir: Path, queries: Mapping[str, str], k: int, threads: int,
                k1: float = 0.9, b: float = 0.4) -> Run:
    """Top-k documents per query; queries that analyse to no terms get an empty list."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not Path(index_dir).is_dir():
        raise IndexingError(f"BM25 index {index_dir} does not exist -- build it with build_bm25_index()")
    lucene = import_pyserini("pyserini.search.lucene")
    searcher = lucene.LuceneSearcher(str(index_dir))
    searcher.set_bm25(k1, b)
    qids = list(queries)
    try:
        hits = searcher.batch_search([queries[qid] for qid in qids], qids, k=k, threads=threads)
    finally:
        searcher.close()
    # 6 decimals: drops float32 noise but keeps Anserini's 1e-6 tie offsets, so the order is explicit.
    return {qid: [(hit.docid, round(float(hit.score), 6)) for hit in hits.get(qid, [])] for qid in qids}


def _text_records(corpus: Mapping[str, str]) -> Iterator[dict]:
    for doc_id, text in corpus.items():
        if text.strip(_JAVA_TRIMMED):
            yield {"id": doc_id, "contents": text}
