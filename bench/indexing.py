"""Lucene impact indexing throughput vs Anserini threads and input shards (it parallelises over files)."""

import random
from collections.abc import Mapping
from pathlib import Path

from splade_peft.index.impact import build_impact_index, write_vector_collection


def replicated_corpus(vectors: Mapping[str, Mapping[str, int]], documents: int, drop: float, seed: int) -> dict:
    """`documents` distinct vectors from a few encoded ones: copy i of a vector loses a random `drop` of its terms.

    Encoding thousands of documents would take most of the benchmark's time budget on a CPU; the
    indexer's and searchers' costs depend on the number of postings, which this keeps realistic.
    """
    rng = random.Random(seed)
    corpus, originals = {}, list(vectors.items())
    for copy in range(-(-documents // len(originals))):
        for doc_id, vector in originals:
            if len(corpus) == documents:
                return corpus
            kept = {t: w for t, w in vector.items() if copy == 0 or rng.random() >= drop}
            corpus[f"{doc_id}-{copy}"] = kept or dict(vector)
    return corpus


def bench_indexing(corpus: Mapping[str, Mapping[str, int]], workdir: Path, layouts: list[tuple[int, int]]) -> dict:
    """Documents/s for each (threads, shards); the time includes the JVM start (~1-3 s), as in the pipeline."""
    rows = []
    for threads, shards in layouts:
        folder = workdir / f"t{threads}-s{shards}"
        write_vector_collection(corpus.items(), folder / "vectors", shards)
        stats = build_impact_index(folder / "vectors", folder / "index", threads)
        rows.append({"threads": threads, "shards": shards, "documents": stats.documents, "seconds": stats.seconds,
                     "docs_per_s": stats.documents / stats.seconds})
    return {"documents": len(corpus), "layouts": rows}
