"""BM25 reference on raw text: Anserini's default analyzer (English stop words, Porter stemming).

Queries are searched by Anserini's SearchCollection in a subprocess (`splade_peft.search.anserini`).
Its default bag-of-words query generator runs the text through the analyzer into terms, without
Lucene's query parser, so `?`, `:`, `(`, `"`, `/`, `*`, `~`, `^`, `[`, `{` or a backslash need no escaping.
"""

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from splade_peft.data.collection import Collection
from splade_peft.errors import IndexingError
from splade_peft.index.impact import IndexStats, run_anserini_indexer, write_jsonl_shards
from splade_peft.search.anserini import JAVA_TRIMMED, search_collection, sendable, tsv_safe
from splade_peft.records import StageStore, fingerprint, mapping_fingerprint
from splade_peft.search.runs import Run, read_trec_run, write_trec_run

# Anserini's defaults, recorded with every cached run and teacher score so a change would redo them.
BM25_PARAMETERS = {"k1": 0.9, "b": 0.4}


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
    # Tabs and line breaks would end the topic's field or line; as spaces they separate words alike.
    texts = {qid: tsv_safe(text) for qid, text in queries.items()}
    # Blank queries are not sent: they analyse to no terms (and Anserini's topic reader chokes on them).
    qids = [qid for qid, text in texts.items() if sendable(text)]
    flags = ["-bm25", "-bm25.k1", repr(float(k1)), "-bm25.b", repr(float(b))]
    hits = search_collection(index_dir, [texts[qid] for qid in qids], k, threads, flags)
    by_qid = {qid: hits.get(position, []) for position, qid in enumerate(qids)}
    # 6 decimals, as Anserini writes them: keeps its 1e-6 tie offsets, so the order stays explicit.
    return {qid: [(docid, round(score, 6)) for docid, score in by_qid.get(qid, [])] for qid in queries}


def _text_records(corpus: Mapping[str, str]) -> Iterator[dict]:
    for doc_id, text in corpus.items():
        # Java's String.trim() strips every char <= U+0020; Anserini skips a document that trims to "".
        if text.strip(JAVA_TRIMMED):
            yield {"id": doc_id, "contents": text}


def bm25_store(collection: Collection, cache_dir: str | Path) -> tuple[StageStore, Path]:
    """The shared cache folder of one corpus's BM25 index (built on first use) and the index inside it."""
    corpus_fingerprint = mapping_fingerprint(collection.corpus)
    store = StageStore(Path(cache_dir) / "bm25" / corpus_fingerprint)
    index_dir, _ = store.run(
        "index", {"corpus": corpus_fingerprint},
        lambda folder: {"documents": build_bm25_index(collection.corpus, folder / "lucene", threads=2).documents},
    )
    return store, index_dir / "lucene"


def cached_bm25_run(collection: Collection, cache_dir: str | Path, k: int, threads: int) -> tuple[Run, Path]:
    """BM25's top k for every query of `collection`, and the TREC run file it is cached in: a sweep
    searches once per collection."""
    store, index_dir = bm25_store(collection, cache_dir)
    inputs = {"queries": mapping_fingerprint(collection.queries), "k": k, **BM25_PARAMETERS}

    def search(folder: Path) -> dict:
        write_trec_run(bm25_search(index_dir, collection.queries, k=k, threads=threads), folder / "run.trec", "bm25")
        return {}

    folder, _ = store.run(f"run-{fingerprint(inputs)}", inputs, search)
    return read_trec_run(folder / "run.trec"), folder / "run.trec"
