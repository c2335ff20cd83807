"""The stages of one job: data, reference rows (BM25, zero-shot), training, evaluation of the trained encoder.

Each evaluation writes its own folder (vectors, impact index, TREC run) through a StageStore, so a
completed stage is reused and an interrupted one is redone. BM25 and zero-shot rows live in the shared
cache, keyed by what produced them, so a sweep computes them once per collection and checkpoint.
"""

import json
import resource
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from splade_peft.config import validate
from splade_peft.data.collection import Collection
from splade_peft.data.sources import load_collection
from splade_peft.data.hard_negatives import (
    FlagEmbeddingSet, TriplesSet, flagembedding_candidates, st_hard_negative_candidates,
)
from splade_peft.data.mixture import Mixture, SingleDatasetBatches
from splade_peft.data.subsample import subsample
from splade_peft.training.teacher_scoring import bm25_pair_scores, cached_splade_scores
from splade_peft.data.teachers import Scores, check_same_dataset, ensemble, load_score_file
from splade_peft.data.pairs import (
    TrainingCollator, TrainingPair, TrainingSet, bm25_candidates, random_candidates, teacher_scored_pairs, training_pairs,
)
from splade_peft.evaluation.metrics import evaluate, macro_average
from splade_peft.evaluation.sparsity import SparsityCounter, sparsity_report
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import build_impact_index, quantize, write_vector_collection
from splade_peft.model.adapters import adapter_callbacks, count_parameters, saved_weights_bytes, wrap_with_adapter
from splade_peft.model.backbones import load_backbone
from splade_peft.model.variants import SparseEncoder, as_sparse_encoder, build_encoder
from splade_peft.records import (
    StageStore, fingerprint, folder_fingerprint, library_versions, mapping_fingerprint, redact, write_json_atomic,
)
from splade_peft.search.bm25 import bm25_search, build_bm25_index
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import read_trec_run, write_trec_run
from splade_peft.tracking import ExperimentTracker
from splade_peft.training.resume import EpochShuffle, ResumableCheckpoint, resume_path
from splade_peft.training.losses import DISTILLATION_LOSSES
from splade_peft.training.module import SpladeModule
from splade_peft.training.validation import RetrievalValidation

def load_eval_collections(cfg: DictConfig) -> dict[str, Collection]:
    collections = {}
    for spec in cfg.eval.datasets.values():
        collection = load_data(spec, spec.split, cfg)
        collections[collection.name] = collection
    return collections


def load_data(spec, split: str, cfg: DictConfig) -> Collection:
    collection = load_collection(
        spec.source, split, path=spec.get("path"), name=spec.get("name"), hub_id=spec.get("hub_id"),
        cache_dir=cfg.paths.cache, unknown_ids=spec.get("unknown_ids", "error"),
    )
    return subsample(collection, spec.get("max_queries"), spec.get("max_documents"), cfg.seed)


# --- BM25 reference and hard negatives ------------------------------------------------------------------

def bm25_store(collection: Collection, cache_dir: str) -> tuple[StageStore, Path]:
    corpus_fingerprint = mapping_fingerprint(collection.corpus)
    store = StageStore(Path(cache_dir) / "bm25" / corpus_fingerprint)
    index_dir, _ = store.run(
        "index", {"corpus": corpus_fingerprint},
        lambda folder: {"documents": build_bm25_index(collection.corpus, folder / "lucene", threads=2).documents},
    )
    return store, index_dir / "lucene"


def bm25_run(collection: Collection, cache_dir: str, k: int, threads: int) -> dict:
    store, index_dir = bm25_store(collection, cache_dir)
    inputs = {"queries": mapping_fingerprint(collection.queries), "k": k, "k1": 0.9, "b": 0.4}

    def search(folder: Path) -> dict:
        write_trec_run(bm25_search(index_dir, collection.queries, k=k, threads=threads), folder / "run.trec", "bm25")
        return {}

    folder, _ = store.run(f"run-{fingerprint(inputs)}", inputs, search)
    return read_trec_run(folder / "run.trec")


def bm25_reference(collection: Collection, cfg: DictConfig) -> dict:
    run = bm25_run(collection, cfg.paths.cache, cfg.eval.k, cfg.eval.search_threads)
    return {"metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade)}


def negative_candidates(collection: Collection, cfg: DictConfig) -> dict:
    if cfg.data.negatives_source == "file":
        return flagembedding_candidates(cfg.data.negatives_file, collection, cfg.data.unknown_ids)[0]
    if cfg.data.negatives_source == "st_hard_negatives":
        systems = cfg.data.hard_negative_systems
        return st_hard_negative_candidates(cfg.data.negatives_file, list(systems) if systems else None,
                                           cfg.data.negatives_depth)
    if cfg.data.negatives_source == "random":
        return random_candidates(collection, cfg.data.negatives_depth, cfg.seed)
    deepest_judged = max(len(judged) for judged in collection.qrels.values())
    run = bm25_run(collection, cfg.paths.cache, cfg.data.negatives_depth + deepest_judged, cfg.eval.search_threads)
    return bm25_candidates(collection, run, cfg.data.negatives_depth)


def training_teacher(collection: Collection, pairs: list[TrainingPair], cfg: DictConfig) -> tuple[Scores | None, str]:
    """The ensemble of data.teacher's score files and scorers over the training pairs, and its name for errors."""
    teacher_cfg = cfg.data.teacher
    members, names = [], []
    for file in teacher_cfg.files:
        scores = load_score_file(file, teacher_cfg.allow_pickle)
        check_same_dataset(scores, collection.queries, str(file))
        members.append(scores)
        names.append(str(file))
    listed = teacher_pairs(pairs) if teacher_cfg.scorers else {}
    if "splade" in teacher_cfg.scorers:
        members.append(cached_splade_scores(
            teacher_cfg.checkpoint, collection.queries, collection.corpus, listed, cfg.paths.cache))
        names.append(f"splade teacher {teacher_cfg.checkpoint}")
    if "bm25" in teacher_cfg.scorers:
        members.append(bm25_teacher_scores(collection, listed, cfg))
        names.append("bm25 teacher")
    if not members:
        return None, ""
    return ensemble(members, teacher_cfg.ensemble), " + ".join(names)


def teacher_pairs(pairs: list[TrainingPair]) -> dict[str, list[str]]:
    """{query id: sorted ids of its positives and candidates}: every pair a scorer must score."""
    wanted: dict[str, set] = {}
    for pair in pairs:
        wanted.setdefault(pair.query_id, set()).update((pair.positive_id, *pair.candidates))
    return {query_id: sorted(doc_ids) for query_id, doc_ids in wanted.items()}


def bm25_teacher_scores(collection: Collection, wanted: dict[str, list[str]], cfg: DictConfig) -> Scores:
    """bm25_pair_scores, cached beside the collection's BM25 index: a sweep scores once."""
    store, index_dir = bm25_store(collection, cfg.paths.cache)
    inputs = {"pairs": fingerprint({q: [collection.queries[q], listed] for q, listed in wanted.items()}),
              "k1": 0.9, "b": 0.4}

    def score(folder: Path) -> dict:
        scores = bm25_pair_scores(index_dir, len(collection.corpus), collection.queries, wanted, cfg.eval.search_threads)
        write_json_atomic(folder / "scores.json", scores)
        return {}

    folder, _ = store.run(f"teacher-{fingerprint(inputs)}", inputs, score)
    return json.loads((folder / "scores.json").read_text())


def needs_teacher(cfg: DictConfig) -> bool:
    return any(cfg.loss.weights.get(name) for name in DISTILLATION_LOSSES) or cfg.data.sampling == "teacher_rank"


def training_set(collection: Collection, cfg: DictConfig):
    """The training items: from a hard-negative file used as it is, or from the collection's qrels with
    negatives from BM25, random draws or a mined file, scored by data.teacher when one is set."""
    if cfg.data.training_file:
        if cfg.data.training_layout == "triples":
            return TriplesSet(cfg.data.training_file, cfg.data.negatives)
        return FlagEmbeddingSet(cfg.data.training_file, cfg.data.negatives, cfg.seed, cfg.data.teacher.from_training_file)
    pairs = training_pairs(collection, negative_candidates(collection, cfg), cfg.data.negatives)
    teacher, teacher_name = training_teacher(collection, pairs, cfg) if needs_teacher(cfg) else (None, "")
    if teacher is not None:
        pairs = teacher_scored_pairs(pairs, teacher, cfg.data.negatives, cfg.data.teacher.missing, teacher_name)
    return TrainingSet(collection, pairs, cfg.data.negatives, cfg.seed, teacher, cfg.data.sampling)


# --- encoding, indexing, search --------------------------------------------------------------------------

def evaluate_encoder(encoder: SparseEncoder, tokenizer, collection: Collection, cfg: DictConfig, folder: Path) -> dict:
    """Encode the corpus into a Lucene impact index, search it with the encoded queries, score the run."""
    documents, queries = SparsityCounter(), SparsityCounter()
    factor = cfg.index.quantization
    encoder = as_sparse_encoder(encoder)

    def quantised(side, texts, max_length, counter):
        for text_id, vector in encode_texts(
            encoder.side(side), tokenizer, texts, max_length, cfg.index.tokens_per_batch, cfg.index.max_batch_size
        ):
            impacts = quantize(vector, factor)
            counter.add(impacts)
            yield text_id, impacts

    started = time.perf_counter()
    write_vector_collection(quantised("documents", collection.corpus, cfg.model.doc_max_length, documents), folder / "vectors", cfg.index.shards)
    encoded = time.perf_counter()
    build_impact_index(folder / "vectors", folder / "index", cfg.index.threads)
    indexed = time.perf_counter()
    query_vectors = dict(quantised("queries", collection.queries, cfg.model.query_max_length, queries))
    run = impact_search(folder / "index", query_vectors, k=cfg.eval.k, threads=cfg.eval.search_threads)
    write_trec_run(run, folder / "run.trec", "splade_peft")
    searched = time.perf_counter()
    return {
        "metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade),
        "sparsity": sparsity_report(documents, queries),
        "timing": {"encode_s": encoded - started, "index_s": indexed - encoded, "search_s": searched - indexed},
    }


def evaluation_inputs(cfg: DictConfig, collection: Collection, model_fingerprint: str) -> dict:
    return {
        "model": model_fingerprint,
        "collection": collection.fingerprint,
        "encoder": OmegaConf.to_container(cfg.encoder),
        "max_lengths": [cfg.model.query_max_length, cfg.model.doc_max_length],
        "quantization": cfg.index.quantization,
        "k": cfg.eval.k,
    }


def zero_shot_reference(encoder, tokenizer, collection, cfg, model_fingerprint: str) -> dict:
    inputs = evaluation_inputs(cfg, collection, model_fingerprint)
    store = StageStore(Path(cfg.paths.cache) / "zero_shot")
    _, summary = store.run(fingerprint(inputs), inputs, partial(evaluate_encoder, encoder, tokenizer, collection, cfg))
    return summary


# --- training ---------------------------------------------------------------------------------------------

def train(encoder: SparseEncoder, tokenizer, collection: Collection, cfg: DictConfig, run_dir: Path, tracker) -> dict:
    if not any(p.requires_grad for p in encoder.parameters()):
        return {"train_s": 0.0, "steps": 0, "training_pairs": 0, "adapter_bytes": 0, "memory": {}}
    dataset = training_set(collection, cfg)
    collate = TrainingCollator(tokenizer, cfg.model.query_max_length, cfg.model.doc_max_length)
    sampler = None
    if cfg.data.mixture.datasets:
        loader = mixture_loader(dataset, collate, cfg)
    else:
        sampler = EpochShuffle(dataset, cfg.seed)
        loader = DataLoader(
            dataset, batch_size=cfg.data.batch_size, sampler=sampler, drop_last=len(dataset) >= cfg.data.batch_size,
            num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.seed), collate_fn=collate,
        )
    module = SpladeModule(encoder, cfg.loss, cfg.optim, cfg.training.max_nonfinite_batches)
    checkpoint = ResumableCheckpoint(run_dir / "checkpoints", cfg.training.checkpoint_every_n_steps, sampler, cfg.data.batch_size)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer), logger=tracker.lightning_logger, default_root_dir=run_dir,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        callbacks=[checkpoint, *validation_callbacks(cfg, tokenizer)] + [
            callback for side in encoder.language_model_encoders() for callback in adapter_callbacks(side.masked_lm)
        ],
    )
    # Lightning keeps the train/eval modes it finds, and the zero-shot pass left the backbone in eval
    # mode: without this, adapter dropout would silently be off.
    encoder.train()
    peak_before = reset_peak_memory()
    started = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=resume_path(checkpoint.folder, training_fingerprint(cfg)), weights_only=True)
    train_s = time.perf_counter() - started
    memory = {"peak_rss_mb": max(peak_before, resident_peak_mb()), **peak_memory_mb("train_")}
    encoder.save(run_dir / "adapter")
    return {"train_s": train_s, "steps": trainer.global_step, "training_pairs": len(dataset),
            "adapter_bytes": saved_weights_bytes(run_dir / "adapter"), "memory": memory,
            "nonfinite_batches": module.nonfinite_batches}


def training_fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint must have been trained with to be resumed (the study bookkeeping aside)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return fingerprint({key: value for key, value in config.items() if key not in ("sweep", "logger")})


def validation_callbacks(cfg: DictConfig, tokenizer) -> list:
    if not cfg.eval.validate_every_n_steps:
        return []
    spec = OmegaConf.merge(cfg.data, {"max_queries": cfg.eval.validation_max_queries,
                                      "max_documents": cfg.eval.validation_max_documents})
    return [RetrievalValidation(
        load_data(spec, cfg.eval.validation_split, cfg), tokenizer, cfg.eval.validate_every_n_steps,
        cfg.model.query_max_length, cfg.model.doc_max_length, cfg.index.quantization, cfg.eval.k,
    )]


def mixture_loader(first: Dataset, collate: TrainingCollator, cfg: DictConfig) -> DataLoader:
    """The main training set and those of data.mixture.datasets, each batch from one of them."""
    members = [first] + [training_set(load_data(spec, spec.split, cfg), cfg) for spec in cfg.data.mixture.datasets.values()]
    batches = SingleDatasetBatches([len(m) for m in members], cfg.data.batch_size, cfg.data.mixture.sampling, cfg.seed)
    return DataLoader(Mixture(members), batch_sampler=batches, num_workers=cfg.data.num_workers, collate_fn=collate)


def reset_peak_memory() -> float:
    """Start the peak-memory marks afresh, so that the training peak is not the loading or zero-shot peak;
    return the resident peak so far, which the reset forgets."""
    peak_before = resident_peak_mb()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        # Linux: writing 5 resets the process's resident-set high-water mark (VmHWM), see proc(5).
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return peak_before


def resident_peak_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(prefix: str = "") -> dict:
    peak = {f"{prefix}peak_rss_mb": resident_peak_mb()}
    if torch.cuda.is_available():
        peak[f"{prefix}peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


# --- the job ----------------------------------------------------------------------------------------------

def run_job(cfg: DictConfig, run_dir: Path, tracker: ExperimentTracker) -> dict:
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    train_collection = load_data(cfg.data, cfg.data.train_split, cfg)
    eval_collections = load_eval_collections(cfg)
    results = {"data": describe_data(train_collection, eval_collections)}
    masked_lm, tokenizer = load_backbone(
        cfg.model, cfg.paths.cache, cfg.lora.quantization, cfg.trainer.precision,
        on_gpu=cfg.trainer.accelerator in ("gpu", "cuda"),
    )
    model_fingerprint = describe_model(cfg, masked_lm)
    results["references"] = reference_rows(masked_lm, tokenizer, eval_collections, train_collection, cfg, model_fingerprint)

    encoder = build_encoder(
        cfg.encoder, masked_lm, tokenizer, train_collection.corpus, cfg.model.doc_max_length,
        adapt=lambda lm: wrap_with_adapter(lm, cfg.lora, cfg.trainer.max_steps),
    )
    results["params"] = count_parameters(encoder)
    training = train(encoder, tokenizer, train_collection, cfg, run_dir, tracker)
    results["params"]["adapter_bytes"] = training.pop("adapter_bytes")
    results["memory"] = {**peak_memory_mb(), **training.pop("memory")}  # whole-process peak, then training's

    adapted_fingerprint = f"{model_fingerprint}+adapter:{folder_fingerprint(run_dir / 'adapter')}"
    evaluations = evaluate_trained(encoder, tokenizer, eval_collections, cfg, run_dir, adapted_fingerprint)
    results["metrics"] = {name: e["metrics"] for name, e in evaluations.items()}
    results["metrics"]["average"] = macro_average({name: e["metrics"] for name, e in evaluations.items()})
    results["sparsity"] = {name: e["sparsity"] for name, e in evaluations.items()}
    results["timing"] = {"train_s": training["train_s"], **sum_timings(e["timing"] for e in evaluations.values())}
    results["training"] = training
    return results


def reference_rows(masked_lm, tokenizer, eval_collections: dict, train_collection: Collection, cfg: DictConfig,
                   model_fingerprint: str) -> dict:
    """BM25 and the untrained checkpoint on every eval collection, both from the shared cache when there.

    The zero-shot row is the encoder variant as training starts from it: the loaded LM on both sides
    (splade_separate's two copies are still one), an inference-free query table at its IDF values, the
    sparsifiers at their configured cut-offs.
    """
    references = {"bm25": {}, "zero_shot": {}}
    base_encoder = build_encoder(cfg.encoder, masked_lm, tokenizer, train_collection.corpus, cfg.model.doc_max_length)
    if base_encoder.own_parameters():
        model_fingerprint = f"{model_fingerprint}+encoder:{base_encoder.own_parameters_fingerprint()}"
    for name, collection in eval_collections.items():
        if cfg.eval.bm25:
            references["bm25"][name] = bm25_reference(collection, cfg)
        if cfg.eval.zero_shot:
            references["zero_shot"][name] = zero_shot_reference(base_encoder, tokenizer, collection, cfg, model_fingerprint)
    return references


def evaluate_trained(encoder, tokenizer, eval_collections: dict, cfg: DictConfig, run_dir: Path, model_fingerprint: str) -> dict:
    store = StageStore(run_dir / "eval")
    evaluations = {}
    for name, collection in eval_collections.items():
        inputs = evaluation_inputs(cfg, collection, model_fingerprint)
        evaluations[name] = store.run(name, inputs, partial(evaluate_encoder, encoder, tokenizer, collection, cfg))[1]
    return evaluations


def sum_timings(timings) -> dict:
    total: dict = {}
    for timing in timings:
        for key, seconds in timing.items():
            total[key] = total.get(key, 0.0) + seconds
    return total


def describe_data(train_collection: Collection, eval_collections: dict) -> dict:
    def describe(collection: Collection) -> dict:
        return {
            "fingerprint": collection.fingerprint, "split": collection.split,
            "documents": len(collection.corpus), "queries": len(collection.queries),
        }

    return {"train": describe(train_collection), "eval": {name: describe(c) for name, c in eval_collections.items()}}


def describe_model(cfg: DictConfig, masked_lm) -> str:
    source = Path(masked_lm.name_or_path)
    checkpoint = folder_fingerprint(source) if source.is_dir() else str(cfg.model.name_or_path)
    return f"{checkpoint}+{cfg.lora.quantization}" if cfg.lora.quantization else checkpoint


def job_record(cfg: DictConfig) -> dict:
    """The reproducibility fields written into results.json from the start."""
    return {
        "seed": cfg.seed,
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
        "versions": library_versions(),
    }
