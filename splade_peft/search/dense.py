"""Dense retrieval: an exact (flat) inner-product Faiss index, in the folder layout Pyserini's FaissSearcher
reads (`index`: the Faiss index, `docid`: one document id per line, in index order).

Search runs on every GPU Faiss sees when the installed build has GPU support (faiss-gpu), else on the CPU.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

# faiss's loader logs, at INFO, every CPU-specific build it fails to find before it loads the generic one:
# two tracebacks' worth of noise in every dense job's log.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from splade_peft.records import staged

INDEX_FILE = "index"
DOCID_FILE = "docid"


def write_dense_index(doc_ids: Sequence[str], embeddings: np.ndarray, folder: Path) -> int:
    """Write the flat inner-product index of `embeddings` (one row per id of `doc_ids`); return its size in bytes."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(doc_ids) != embeddings.shape[0]:
        raise ValueError(f"{len(doc_ids)} document ids for embeddings of shape {embeddings.shape}")
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    with staged(Path(folder), folder=True) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        (staging / DOCID_FILE).write_text("".join(f"{doc_id}\n" for doc_id in doc_ids))
    return (Path(folder) / INDEX_FILE).stat().st_size


def on_gpus(index: faiss.Index) -> faiss.Index:
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return faiss.index_cpu_to_all_gpus(index) if gpus else index


def dense_search(folder: Path, query_ids: Sequence[str], queries: np.ndarray, k: int,
                 threads: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """{query id: [(doc id, inner product), ...]} best first, at most k per query, from the index in `folder`."""
    if threads:
        faiss.omp_set_num_threads(threads)
    index = on_gpus(faiss.read_index(str(Path(folder) / INDEX_FILE)))
    doc_ids = (Path(folder) / DOCID_FILE).read_text().splitlines()
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(doc_ids)))
    return {query_id: [(doc_ids[row], float(score)) for row, score in zip(query_rows, query_scores) if row >= 0]
            for query_id, query_rows, query_scores in zip(query_ids, rows, scores)}

