"""Evaluating an encoder on a collection: encode the corpus, quantise it into a Lucene impact index,
encode and search the queries, score the run. Each evaluation is a stage of a StageStore (vectors,
index and TREC run in its folder), so a completed one is reused and an interrupted one redone."""

import time
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.device import on_job_device
from splade_peft.evaluation.metrics import evaluate
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


def evaluate_encoder(encoder: SparseEncoder, tokenizer, collection: Collection, cfg: DictConfig, folder: Path,
                     encoding_folder: Path | None = None) -> dict:
    """Encode the corpus into a Lucene impact index, search it with the encoded queries, score the run.

    With index.encode_shards > 1 the corpus is encoded shard by shard into `encoding_folder` (index/sharded.py),
    which outlives an interrupted evaluation, so that its complete shards are reused."""
    documents, queries = SparsityCounter(), SparsityCounter()
    factor = cfg.index.quantization
    encoder = as_sparse_encoder(encoder)

    def quantised(side, texts, max_length, counter):
        for text_id, vector in bar(encode_texts(
            encoder.side(side), tokenizer, texts, max_length, cfg.index.tokens_per_batch, cfg.index.max_batch_size
        ), total=len(texts), desc=f"encoding {side}"):
            impacts = quantize(vector, factor)
            counter.add(impacts)
            yield text_id, impacts

    started = time.perf_counter()
    with stage(f"encoding {len(collection.corpus)} documents"):
        vectors = folder / "vectors"
        if cfg.index.encode_shards > 1:
            vectors = (encoding_folder or folder / "encoding") / "vectors"
            _, documents = encode_corpus_sharded(encoder.side("documents"), tokenizer, collection.corpus, cfg,
                                                 vectors.parent)
        else:
            write_vector_collection(quantised("documents", collection.corpus, cfg.model.doc_max_length, documents), vectors, cfg.index.shards)
    encoded = time.perf_counter()
    with stage("indexing"):
        build_impact_index(vectors, folder / "index", cfg.index.threads)
    indexed = time.perf_counter()
    with stage(f"searching {len(collection.queries)} queries"):
        query_vectors = dict(quantised("queries", collection.queries, cfg.model.query_max_length, queries))
        run = impact_search(folder / "index", query_vectors, k=cfg.eval.k, threads=cfg.eval.search_threads)
    write_trec_run(run, folder / RUN_FILE, "splade_peft")
    searched = time.perf_counter()
    return {
        "metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade),
        "sparsity": sparsity_report(documents, queries),
        "timing": {"encode_s": encoded - started, "index_s": indexed - encoded, "search_s": searched - indexed},
    }


def evaluation_inputs(cfg: DictConfig, collection: Collection, model_fingerprint: str) -> dict:
    """What an evaluation's result depends on: a stage with the same inputs is reused."""
    return {
        "model": model_fingerprint,
        "collection": collection.fingerprint,
        "encoder": OmegaConf.to_container(cfg.encoder),
        "max_lengths": [cfg.model.query_max_length, cfg.model.doc_max_length],
        "quantization": cfg.index.quantization,
        "k": cfg.eval.k,
    }


def evaluate_in_store(store: StageStore, name: str, encoder, tokenizer, collection: Collection, cfg: DictConfig,
                      model_fingerprint: str) -> tuple[Path, dict]:
    """The encoder's evaluation (sparse: evaluate_encoder; dense: evaluate_dense_encoder) as stage `name` of
    `store`: (its folder, holding RUN_FILE, and its summary)."""
    inputs = evaluation_inputs(cfg, collection, model_fingerprint)
    if getattr(encoder, "is_sparse", True):
        evaluate_stage = partial(evaluate_encoder, encoder, tokenizer, collection, cfg,
                                 encoding_folder=store.root / ".encoding" / name)
    else:
        # Imported here: Faiss is loaded for dense jobs only (on import it probes and reports CPU variants).
        from splade_peft.evaluation.dense_retrieval import evaluate_dense_encoder

        evaluate_stage = partial(evaluate_dense_encoder, encoder, tokenizer, collection, cfg)
    # On the job's device: Lightning's teardown leaves a trained encoder on the CPU.
    with on_job_device(encoder, cfg.trainer):
        return store.run(name, inputs, evaluate_stage)


def evaluate_trained(encoder, tokenizer, collections: dict[str, Collection], cfg: DictConfig, run_dir: Path,
                     model_fingerprint: str) -> dict[str, tuple[Path, dict]]:
    """The trained encoder on every eval collection, each a stage under <run_dir>/eval/<name>."""
    store = StageStore(run_dir / "eval")
    return {name: evaluate_in_store(store, name, encoder, tokenizer, collection, cfg, model_fingerprint)
            for name, collection in collections.items()}
