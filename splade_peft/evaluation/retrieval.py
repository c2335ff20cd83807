"""Evaluating an encoder on a collection: encode the corpus, quantise it into a Lucene impact index,
encode and search the queries, score the run. Each evaluation is a stage of a StageStore (vectors,
index and TREC run in its folder), so a completed one is reused and an interrupted one redone."""

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.device import on_job_device
from splade_peft.evaluation.metrics import evaluate
from splade_peft.index.config import SEARCH_ENGINES
from splade_peft.index.sparsity import SparsityCounter, sparsity_report
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import build_impact_index, quantize, write_vector_collection
from splade_peft.index.sharded import encode_corpus_sharded
from splade_peft.model.variants import SparseEncoder, as_sparse_encoder
from splade_peft.progress import bar, stage
from splade_peft.records import StageStore
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import write_trec_run

RUN_FILE = "run.trec"


@dataclass(frozen=True)
class EvaluationSettings:
    """What evaluating an encoder reads of the job's config."""

    index: Any    # the `index` section: engine, quantisation, batching, sharded encoding
    trainer: Any  # the `trainer` section: the job's device and precision
    encoder: Any  # the `encoder` section: part of what an evaluation's result depends on
    query_max_length: int
    doc_max_length: int
    k: int
    search_threads: int


@SEARCH_ENGINES.register("lucene", sharded_encoding=True)
def evaluate_encoder(encoder: SparseEncoder, tokenizer, collection: Collection, settings: EvaluationSettings,
                     folder: Path, encoding_folder: Path | None = None) -> dict:
    """Encode the corpus into a Lucene impact index, search it with the encoded queries, score the run.

    With index.encode_shards > 1 the corpus is encoded shard by shard into `encoding_folder` (index/sharded.py),
    which outlives an interrupted evaluation, so that its complete shards are reused."""
    documents, queries = SparsityCounter(), SparsityCounter()
    index = settings.index
    factor = index.quantization
    encoder = as_sparse_encoder(encoder)

    def quantised(side, texts, max_length, counter):
        for text_id, vector in bar(encode_texts(
            encoder.side(side), tokenizer, texts, max_length, index.tokens_per_batch, index.max_batch_size
        ), total=len(texts), desc=f"encoding {side}"):
            impacts = quantize(vector, factor)
            counter.add(impacts)
            yield text_id, impacts

    started = time.perf_counter()
    with stage(f"encoding {len(collection.corpus)} documents"):
        vectors = folder / "vectors"
        if index.encode_shards > 1:
            vectors = (encoding_folder or folder / "encoding") / "vectors"
            _, documents = encode_corpus_sharded(encoder.side("documents"), tokenizer, collection.corpus, index,
                                                 settings.doc_max_length, vectors.parent)
        else:
            write_vector_collection(quantised("documents", collection.corpus, settings.doc_max_length, documents),
                                    vectors, index.shards)
    encoded = time.perf_counter()
    with stage("indexing"):
        build_impact_index(vectors, folder / "index", index.threads)
    indexed = time.perf_counter()
    with stage(f"searching {len(collection.queries)} queries"):
        query_vectors = dict(quantised("queries", collection.queries, settings.query_max_length, queries))
        run = impact_search(folder / "index", query_vectors, k=settings.k, threads=settings.search_threads)
    write_trec_run(run, folder / RUN_FILE, "splade_peft")
    searched = time.perf_counter()
    return {
        "metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade),
        "sparsity": sparsity_report(documents, queries),
        "timing": {"encode_s": encoded - started, "index_s": indexed - encoded, "search_s": searched - indexed},
    }


def evaluation_inputs(settings: EvaluationSettings, collection: Collection, model_fingerprint: str) -> dict:
    """What an evaluation's result depends on: a stage with the same inputs is reused."""
    return {
        "model": model_fingerprint,
        "collection": collection.fingerprint,
        "encoder": OmegaConf.to_container(settings.encoder) if OmegaConf.is_config(settings.encoder) else settings.encoder,
        "max_lengths": [settings.query_max_length, settings.doc_max_length],
        "quantization": settings.index.quantization,
        "k": settings.k,
    }


def evaluate_in_store(store: StageStore, name: str, encoder, tokenizer, collection: Collection,
                      settings: EvaluationSettings, model_fingerprint: str) -> tuple[Path, dict]:
    """The encoder's evaluation by the `index.name` engine as stage `name` of `store`: (its folder, holding
    RUN_FILE, and its summary)."""
    inputs = evaluation_inputs(settings, collection, model_fingerprint)
    engine = SEARCH_ENGINES.get(settings.index.name)
    extra = {"encoding_folder": store.root / ".encoding" / name} if engine.sharded_encoding else {}
    evaluate_stage = partial(engine.implementation, encoder, tokenizer, collection, settings, **extra)
    # On the job's device: Lightning's teardown leaves a trained encoder on the CPU.
    with on_job_device(encoder, settings.trainer):
        return store.run(name, inputs, evaluate_stage)


def evaluate_trained(encoder, tokenizer, collections: dict[str, Collection], settings: EvaluationSettings,
                     run_dir: Path, model_fingerprint: str) -> dict[str, tuple[Path, dict]]:
    """The trained encoder on every eval collection, each a stage under <run_dir>/eval/<name>."""
    store = StageStore(run_dir / "eval")
    return {name: evaluate_in_store(store, name, encoder, tokenizer, collection, settings, model_fingerprint)
            for name, collection in collections.items()}
