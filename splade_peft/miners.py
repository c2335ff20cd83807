"""The retrievers `python -m splade_peft.mine` mines with, each returning its ranking of the corpus for every
query and its own score of every judged positive (what positive-aware filtering compares candidates with).

- bm25: Pyserini BM25 (cached per collection);
- splade: a SPLADE checkpoint searching its own exact impact index;
- adapter: what a training job saved (`<run_dir>` or `<run_dir>/adapter`), rebuilt from the job's saved config
  the way `model.adapter=<run_dir>` evaluation rebuilds it; sparse families search an exact impact index, dense
  ones an exact inner-product scan.

The encoders run on the device and at the precision of a trainer section (`trainer`: the saved job's, or the
mining command's options), as the job's own evaluation does.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.device import job_device, on_job_device
from splade_peft.errors import DataError
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import quantize
from splade_peft.search.bm25 import cached_bm25_run
from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.runs import Run

QUANTIZATION = 100
# The lengths a bare SPLADE checkpoint is mined with (the teacher scorer's, training/teacher_scoring.py).
SPLADE_QUERY_LENGTH, SPLADE_DOC_LENGTH = 32, 256
QUERY_BATCH = 256  # queries scored at once against the whole dense corpus


@dataclass
class Ranking:
    run: Run  # best first, the miner's scores
    positive_scores: dict[str, dict[str, float]]  # {qid: {positive id: the miner's score}}
    unretrieved_positives: int = 0  # positives below the miner's top k (see bm25_ranking for their score)


def judged_positives(collection: Collection) -> dict[str, list[str]]:
    return {q: sorted(d for d, grade in judged.items() if grade > 0) for q, judged in collection.qrels.items()
            if q in collection.queries}


# --- BM25 -------------------------------------------------------------------------------------------------------

def bm25_ranking(collection: Collection, k: int, cache_dir: str, threads: int = 2) -> Ranking:
    """A positive BM25 retrieved gets its retrieved score. One it did not retrieve is given the query's
    lowest retrieved score: its true score is at most that, so a ceiling computed from it is never below the
    exact one and the filter removes no more than exact scoring would (it may keep a few it should drop).
    Scoring it exactly would need the Lucene index's per-document term statistics, one Java call per pair."""
    run = cached_bm25_run(collection, cache_dir, k, threads=threads)[0]
    scores, unretrieved = {}, 0
    for query_id, positives in judged_positives(collection).items():
        hits = dict(run.get(query_id, []))
        floor = min(hits.values(), default=0.0)
        unretrieved += sum(d not in hits for d in positives)
        scores[query_id] = {d: hits.get(d, floor) for d in positives}
    return Ranking(run, scores, unretrieved)


# --- sparse encoders (a SPLADE checkpoint, a saved sparse job) ----------------------------------------------------

def sparse_ranking(query_side, document_side, tokenizer, collection: Collection, k: int,
                   query_length: int, doc_length: int) -> Ranking:
    """Exact impact search; a positive outside the top k is scored by the dot product of its quantised vector
    with the query's, the very score the search would have given it."""
    positives = judged_positives(collection)
    wanted = {d for listed in positives.values() for d in listed}
    positive_vectors: dict[str, dict[str, int]] = {}
    documents = kept_aside(quantised(document_side, tokenizer, collection.corpus, doc_length), wanted, positive_vectors)
    searcher = ExactImpactSearcher(documents)
    queries = dict(quantised(query_side, tokenizer, collection.queries, query_length))
    run = searcher.search(queries, k)
    scores, unretrieved = {}, 0
    for query_id, listed in positives.items():
        hits = dict(run.get(query_id, []))
        unretrieved += sum(d not in hits for d in listed)
        scores[query_id] = {d: hits.get(d, impact_dot(queries[query_id], positive_vectors.get(d, {}))) for d in listed}
    return Ranking(run, scores, unretrieved)


def quantised(side, tokenizer, texts: Mapping[str, str], max_length: int) -> Iterator[tuple[str, dict[str, int]]]:
    return ((i, quantize(v, QUANTIZATION)) for i, v in encode_texts(side, tokenizer, texts, max_length))


def kept_aside(vectors: Iterable[tuple[str, dict]], wanted: set[str], store: dict) -> Iterator[tuple[str, dict]]:
    """Pass the corpus' vectors through, keeping the positives' (the corpus itself is not held twice)."""
    for doc_id, vector in vectors:
        if doc_id in wanted:
            store[doc_id] = vector
        yield doc_id, vector


def impact_dot(query: Mapping[str, int], document: Mapping[str, int]) -> float:
    return float(sum(w * document[t] for t, w in query.items() if w > 0 and document.get(t, 0) > 0))


def splade_checkpoint_ranking(checkpoint: str | Path, collection: Collection, k: int, trainer) -> Ranking:
    from splade_peft.training.teacher_scoring import load_splade

    encoder, tokenizer = load_splade(checkpoint)
    with on_job_device(encoder, trainer):
        return sparse_ranking(encoder, encoder, tokenizer, collection, k, SPLADE_QUERY_LENGTH, SPLADE_DOC_LENGTH)


# --- dense encoders -------------------------------------------------------------------------------------------------

def dense_ranking(encoder, tokenizer, collection: Collection, k: int, query_length: int, doc_length: int) -> Ranking:
    """Exact inner products over the whole corpus (the flat Faiss index's scores); positives scored directly."""
    from splade_peft.evaluation.dense_retrieval import embed_texts

    doc_ids, documents = embed_texts(encoder.side("documents"), tokenizer, collection.corpus, doc_length)
    query_ids, queries = embed_texts(encoder.side("queries"), tokenizer, collection.queries, query_length)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    run, scores = {}, {}
    positives = judged_positives(collection)
    for start in range(0, len(query_ids), QUERY_BATCH):
        batch = queries[start:start + QUERY_BATCH] @ documents.T
        for offset, query_id in enumerate(query_ids[start:start + QUERY_BATCH]):
            row = batch[offset]
            top = np.argsort(-row, kind="stable")[:k]
            run[query_id] = [(doc_ids[i], float(row[i])) for i in top]
            scores[query_id] = {d: float(row[row_of[d]]) for d in positives.get(query_id, [])}
    return Ranking(run, {q: s for q, s in scores.items() if q in positives})


# --- a training job's saved encoder --------------------------------------------------------------------------------

def job_config(run_folder: str | Path):
    """The saved job's config: <run_dir>/.hydra/config.yaml beside its adapter/ folder."""
    from splade_peft.model.saved import adapter_location

    path = adapter_location(run_folder).parent / ".hydra" / "config.yaml"
    if not path.exists():
        raise DataError(path, "not found: mining with a job's adapter rebuilds the encoder from the job's config",
                        fix="pass the run folder of `python -m splade_peft` (it holds adapter/ and .hydra/)")
    return OmegaConf.load(path)


def saved_job_encoder(run_folder: str | Path, collection: Collection, cache_dir: str, trainer):
    """(encoder, tokenizer, job config): the job's backbone with its saved adapter and own parameters put on it,
    exactly as pipeline.run_job does for `model.adapter=<run_dir> lora=frozen`; a k-bit backbone is loaded onto
    the device of `trainer` (the trainer section), as bitsandbytes places it when loading."""
    from splade_peft.model.backbones import load_backbone
    from splade_peft.model.saved import backbone_config, saved_encoder
    from splade_peft.model.variants import build_encoder

    cfg = job_config(run_folder)
    saved = saved_encoder(str(run_folder))
    if saved is None:
        raise DataError(run_folder, "is an exported model, not a job's adapter folder",
                        fix="mine with the run folder the export was made from")
    masked_lm, tokenizer = load_backbone(backbone_config(cfg.model), cache_dir, cfg.lora.quantization,
                                         trainer.get("precision", "32-true"), device=job_device(trainer),
                                         method=cfg.lora.method)
    # The inference-free query table is initialised from this corpus, then replaced by the saved table.
    encoder = build_encoder(cfg.encoder, masked_lm, tokenizer, collection.corpus, cfg.model.doc_max_length,
                            adapt=saved.adapt())
    saved.load_own_parameters(encoder)
    return encoder.eval(), tokenizer, cfg


def adapter_ranking(run_folder: str | Path, collection: Collection, k: int, cache_dir: str, trainer) -> Ranking:
    encoder, tokenizer, cfg = saved_job_encoder(run_folder, collection, cache_dir, trainer)
    lengths = (cfg.model.query_max_length, cfg.model.doc_max_length)
    with on_job_device(encoder, trainer):
        if encoder.is_sparse:
            return sparse_ranking(encoder.side("queries"), encoder.side("documents"), tokenizer, collection, k, *lengths)
        return dense_ranking(encoder, tokenizer, collection, k, *lengths)
