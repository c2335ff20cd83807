"""Evaluating an encoder on a collection: encode the corpus, quantise it into an impact index (Lucene by
default; `index=exact` or `index=seismic` over the same vector files), encode and search the queries,
score the run. Each evaluation is a stage of a StageStore (vectors,
index and TREC run in its folder), so a completed one is reused and an interrupted one redone."""

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.device import on_job_device
from splade_peft.evaluation.metrics import evaluate
from splade_peft.index.config import SEARCH_ENGINES
from splade_peft.index.sparsity import SparsityCounter, sparsity_report
from splade_peft.index.encode import dimension_names, encoded_batches
from splade_peft.index.impact import build_impact_index, read_vector_collection, write_impact_batches
from splade_peft.index.sharded import encode_corpus_sharded
from splade_peft.model.variants import SparseEncoder, as_sparse_encoder
from splade_peft.progress import bar, stage
from splade_peft.records import StageStore
from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import Run, without_self_hits, write_trec_run

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
    # {dataset: (query_max_length, doc_max_length)} an eval.datasets entry sets for itself (None: the model's)
    dataset_max_lengths: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)

    def for_dataset(self, name: str) -> "EvaluationSettings":
        """The settings with the lengths `name`'s entry sets (BEIR's queries are not MS MARCO's 32 tokens)."""
        query, doc = self.dataset_max_lengths.get(name, (None, None))
        return replace(self, query_max_length=query or self.query_max_length, doc_max_length=doc or self.doc_max_length)


# An engine's search step: (queries, k) -> run, over the index its build step made.
Searcher = Callable[[Mapping[str, Mapping[str, int]], int], Run]
# An engine's build step: (the folder of quantised document vector files, the evaluation's folder, settings)
# -> its searcher. Encoding, self-hit rule, run file, metrics and timings are shared (evaluate_sparse).
IndexBuilder = Callable[[Path, Path, EvaluationSettings], Searcher]


@SEARCH_ENGINES.register("lucene", sharded_encoding=True, fingerprinted=False)
def evaluate_encoder(encoder: SparseEncoder, tokenizer, collection: Collection, settings: EvaluationSettings,
                     folder: Path, encoding_folder: Path | None = None) -> dict:
    """Encode the corpus into a Lucene impact index, search it with the encoded queries, score the run."""
    return evaluate_sparse(lucene_index, encoder, tokenizer, collection, settings, folder, encoding_folder)


@SEARCH_ENGINES.register("exact", sharded_encoding=True)
def evaluate_exact(encoder: SparseEncoder, tokenizer, collection: Collection, settings: EvaluationSettings,
                   folder: Path, encoding_folder: Path | None = None) -> dict:
    """The same quantised vectors scored by exact integer dot products in memory: Lucene's rankings, no JVM."""
    return evaluate_sparse(exact_index, encoder, tokenizer, collection, settings, folder, encoding_folder)


@SEARCH_ENGINES.register("seismic", sharded_encoding=True, reads=("seismic",))
def evaluate_seismic(encoder: SparseEncoder, tokenizer, collection: Collection, settings: EvaluationSettings,
                     folder: Path, encoding_folder: Path | None = None) -> dict:
    """The same quantised vectors in a Seismic index (approximate, index.seismic's parameters)."""
    return evaluate_sparse(seismic_index, encoder, tokenizer, collection, settings, folder, encoding_folder)


def lucene_index(vectors: Path, folder: Path, settings: EvaluationSettings) -> Searcher:
    build_impact_index(vectors, folder / "index", settings.index.threads)
    return partial(impact_search, folder / "index", threads=settings.search_threads)


def exact_index(vectors: Path, folder: Path, settings: EvaluationSettings) -> Searcher:
    # Read back from the vector files rather than kept from the encoding: sharded encoding writes them in
    # other processes or SLURM jobs, so the files are the one place every encoding path leaves the vectors,
    # and the unsharded path streams to them without holding the corpus in memory twice.
    return ExactImpactSearcher(read_vector_collection(vectors)).search


def seismic_index(vectors: Path, folder: Path, settings: EvaluationSettings) -> Searcher:
    # Imported here: the extra is optional, and registering the engine must not need it.
    from splade_peft.search.seismic import SeismicImpactSearcher

    searcher = SeismicImpactSearcher(read_vector_collection(vectors), dict(settings.index.seismic), settings.index.threads)
    return partial(searcher.search, threads=settings.search_threads)


def evaluate_sparse(build: IndexBuilder, encoder: SparseEncoder, tokenizer, collection: Collection,
                    settings: EvaluationSettings, folder: Path, encoding_folder: Path | None = None) -> dict:
    """Encode the corpus into quantised vector files, index them with `build`, search the encoded queries,
    score the run; every sparse engine's evaluation, the engines differing only in `build`.

    With index.encode_shards > 1 the corpus is encoded shard by shard into `encoding_folder` (index/sharded.py),
    which outlives an interrupted evaluation, so that its complete shards are reused."""
    encoder = as_sparse_encoder(encoder)
    started = time.perf_counter()
    with stage(f"encoding {len(collection.corpus)} documents"):
        vectors, documents = encode_documents(encoder, tokenizer, collection, settings, folder, encoding_folder)
    encoded = time.perf_counter()
    with stage("indexing"):
        search = build(vectors, folder, settings)
    indexed = time.perf_counter()
    with stage(f"searching {len(collection.queries)} queries"):
        queries = SparsityCounter()
        query_vectors = dict(quantised_vectors(encoder.side("queries"), tokenizer, collection.queries,
                                               settings.query_max_length, settings.index, queries, "queries"))
        run = collection_run(collection, lambda k: search(query_vectors, k), settings.k)
    write_trec_run(run, folder / RUN_FILE, "splade_peft")
    searched = time.perf_counter()
    return {
        "metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade),
        "sparsity": sparsity_report(documents, queries),
        "timing": {"encode_s": encoded - started, "index_s": indexed - encoded, "search_s": searched - indexed},
    }


def encode_documents(encoder: SparseEncoder, tokenizer, collection: Collection, settings: EvaluationSettings,
                     folder: Path, encoding_folder: Path | None) -> tuple[Path, SparsityCounter]:
    """(the folder of quantised document vector files, their sparsity counts), in one pass or in shards."""
    index = settings.index
    if index.encode_shards > 1:
        vectors = (encoding_folder or folder / "encoding") / "vectors"
        _, documents = encode_corpus_sharded(encoder.side("documents"), tokenizer, collection.corpus, index,
                                             settings.doc_max_length, vectors.parent, settings.trainer.precision)
        return vectors, documents
    documents, side = SparsityCounter(), encoder.side("documents")
    batches = impact_batches(side, tokenizer, collection.corpus, settings.doc_max_length, index)
    write_impact_batches(batches, dimension_names(side, tokenizer), folder / "vectors", index.shards, documents,
                         total=len(collection.corpus))
    return folder / "vectors", documents


def impact_batches(side, tokenizer, texts: Mapping[str, str], max_length: int, index):
    """The texts' quantised vectors by encode.encoded_batches, batched by the index section's keys."""
    return encoded_batches(side, tokenizer, texts, max_length, index.tokens_per_batch, index.max_batch_size,
                           index.quantization)


def quantised_vectors(side, tokenizer, texts: Mapping[str, str], max_length: int, index, counter: SparsityCounter,
                      desc: str) -> Iterator[tuple[str, dict[str, int]]]:
    """(id, integer impacts) of every text, counted into `counter` as they stream past."""
    terms = dimension_names(side, tokenizer)
    vectors = (vector for batch in impact_batches(side, tokenizer, texts, max_length, index) for vector in batch.vectors(terms))
    for text_id, impacts in bar(vectors, total=len(texts), desc=f"encoding {desc}"):
        counter.add(impacts)
        yield text_id, impacts


def collection_run(collection: Collection, search: Callable[[int], Run], k: int) -> Run:
    """`search(k)` under the collection's rules: with ignore_identical_ids one hit more is asked for and the
    query's own document dropped (BEIR's rule), so that each query still keeps k hits. Every engine's run
    passes through here, sparse and dense, before it is written or scored."""
    if not collection.ignore_identical_ids:
        return search(k)
    return without_self_hits(search(k + 1), k)


def evaluation_inputs(settings: EvaluationSettings, collection: Collection, model_fingerprint: str) -> dict:
    """What an evaluation's result depends on: a stage with the same inputs is reused."""
    return {
        "model": model_fingerprint,
        "collection": collection.fingerprint,
        "encoder": OmegaConf.to_container(settings.encoder) if OmegaConf.is_config(settings.encoder) else settings.encoder,
        "max_lengths": [settings.query_max_length, settings.doc_max_length],
        "quantization": settings.index.quantization,
        "k": settings.k,
        **engine_inputs(settings.index),
        # Only when set: the fingerprints of every other collection's stages stay as they were.
        **({"ignore_identical_ids": True} if collection.ignore_identical_ids else {}),
    }


def engine_inputs(index) -> dict:
    """The engine and the keys it reads (index.seismic), so that a run of an approximate engine is never
    reused for another's. Engines registered with fingerprinted=False (lucene, faiss) add nothing: their
    stage fingerprints predate the choice of engine, and adding it would invalidate every cached stage."""
    engine = SEARCH_ENGINES.get(index.name)
    if not engine.fingerprinted:
        return {}
    read = {key: getattr(index, key) for key in engine.reads}
    return {"engine": engine.name, **{key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                                      for key, value in read.items()}}


def evaluate_in_store(store: StageStore, name: str, encoder, tokenizer, collection: Collection,
                      settings: EvaluationSettings, model_fingerprint: str, wait: bool = True) -> tuple[Path, dict]:
    """The encoder's evaluation by the `index.name` engine as stage `name` of `store`: (its folder, holding
    RUN_FILE, and its summary); without `wait`, StageBusy while another job produces it."""
    inputs = evaluation_inputs(settings, collection, model_fingerprint)
    engine = SEARCH_ENGINES.get(settings.index.name)
    extra = {"encoding_folder": store.root / ".encoding" / name} if engine.sharded_encoding else {}
    evaluate_stage = partial(engine.implementation, encoder, tokenizer, collection, settings, **extra)
    # On the job's device: Lightning's teardown leaves a trained encoder on the CPU.
    with on_job_device(encoder, settings.trainer):
        return store.run(name, inputs, evaluate_stage, wait)


def evaluate_trained(encoder, tokenizer, collections: dict[str, Collection], settings: EvaluationSettings,
                     run_dir: Path, model_fingerprint: str) -> dict[str, tuple[Path, dict]]:
    """The trained encoder on every eval collection, each a stage under <run_dir>/eval/<name>."""
    store = StageStore(run_dir / "eval")
    return {name: evaluate_in_store(store, name, encoder, tokenizer, collection, settings.for_dataset(name), model_fingerprint)
            for name, collection in collections.items()}
