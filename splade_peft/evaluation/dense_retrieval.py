"""Evaluating a dense encoder on a collection: embed the corpus into a flat Faiss index (Pyserini's dense
layout), embed and search the queries, score the run: the `index=faiss` engine, the dense counterpart of
evaluation/retrieval.py; it reports the representation (family, dimension,
index size) where the sparse path reports non-zeros."""

import time
from collections.abc import Mapping
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from splade_peft.data.collection import Collection
from splade_peft.evaluation.metrics import evaluate
from splade_peft.evaluation.retrieval import EvaluationSettings, collection_run
from splade_peft.index.config import SEARCH_ENGINES
from splade_peft.index.encode import CHUNK, length_sorted_batches
from splade_peft.search.runs import write_trec_run

RUN_FILE = "run.trec"


@torch.inference_mode()
def embed_texts(side: torch.nn.Module, tokenizer, texts: Mapping[str, str], max_length: int,
                tokens_per_batch: int = 8192, max_batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """(ids in `texts` order, float32 embeddings one row per id), encoded in length-sorted batches."""
    device = next(side.parameters()).device
    side.eval()
    ids, rows = list(texts), []
    remaining = iter(ids)
    while chunk := list(islice(remaining, CHUNK)):
        token_ids = tokenizer([texts[i] for i in chunk], truncation=True, max_length=max_length)["input_ids"]
        embeddings = [None] * len(chunk)
        for batch in length_sorted_batches([len(t) for t in token_ids], tokens_per_batch, max_batch_size):
            padded = tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt")
            vectors = side(padded["input_ids"].to(device), padded["attention_mask"].to(device)).float().cpu().numpy()
            for row, index in enumerate(batch):
                embeddings[index] = vectors[row]
        rows.extend(embeddings)
    return ids, np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


@SEARCH_ENGINES.register("faiss", sparse=False, fingerprinted=False)
def evaluate_dense_encoder(encoder, tokenizer, collection: Collection, settings: EvaluationSettings, folder: Path) -> dict:
    """Embed the corpus into <folder>/index, search it with the embedded queries (k = eval.k), score the run."""
    # Imported here: Faiss loads for dense jobs only (registering this engine must not load it).
    from splade_peft.search.dense import dense_search, write_dense_index

    folder = Path(folder)
    started = time.perf_counter()
    doc_ids, documents = embed_texts(encoder.side("documents"), tokenizer, collection.corpus, settings.doc_max_length,
                                     settings.index.tokens_per_batch, settings.index.max_batch_size)
    encoded = time.perf_counter()
    index_bytes = write_dense_index(doc_ids, documents, folder / "index")
    indexed = time.perf_counter()
    query_ids, queries = embed_texts(encoder.side("queries"), tokenizer, collection.queries, settings.query_max_length,
                                     settings.index.tokens_per_batch, settings.index.max_batch_size)
    run = collection_run(collection, lambda k: dense_search(folder / "index", query_ids, queries, k=k,
                                                            threads=settings.search_threads), settings.k)
    write_trec_run(run, folder / RUN_FILE, "splade_peft")
    searched = time.perf_counter()
    return {
        "metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade),
        "representation": {"family": "dense", "dim": int(documents.shape[1]), "index_bytes": index_bytes},
        "timing": {"encode_s": encoded - started, "index_s": indexed - encoded, "search_s": searched - indexed},
    }
