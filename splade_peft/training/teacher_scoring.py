"""Teacher scores computed rather than read from a file: a trained SPLADE checkpoint's dot products
(data.teacher.scorers=[splade], and the mining command) or BM25 (data.teacher.scorers=[bm25])."""

import json
from collections.abc import Mapping
from pathlib import Path

from splade_peft.data.collection import Collection
from splade_peft.data.config import TEACHER_SCORERS
from splade_peft.data.teachers import Scores
from splade_peft.device import on_job_device
from splade_peft.errors import MissingCheckpointError
from splade_peft.index.encode import encode_texts
from splade_peft.model.backbones import load_pretrained
from splade_peft.model.pretrained import FETCH_COMMAND
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.records import StageStore, fingerprint, folder_fingerprint, write_json_atomic
from splade_peft.search.bm25 import BM25_PARAMETERS, bm25_search, bm25_store


def load_splade(checkpoint: str | Path) -> tuple[SpladeEncoder, object]:
    if not (Path(checkpoint) / "config.json").is_file():
        raise MissingCheckpointError(f"data.teacher.checkpoint={checkpoint}: no checkpoint there -- run "
                                     f"`{FETCH_COMMAND}` or point it at a trained SPLADE folder")
    masked_lm, tokenizer = load_pretrained(str(checkpoint), trust_remote_code=False)
    return SpladeEncoder(masked_lm, "max"), tokenizer


def dot(query: Mapping[str, float], document: Mapping[str, float]) -> float:
    return sum(weight * document[term] for term, weight in query.items() if term in document)


def splade_scores(checkpoint: str | Path, queries: Mapping[str, str], corpus: Mapping[str, str],
                  wanted: Mapping[str, list[str]], query_max_length: int = 32, doc_max_length: int = 256,
                  trainer_cfg=None) -> Scores:
    """{qid: {doc_id: score}} for every document listed under a query in `wanted`; each text is encoded once,
    on the job's device with the trainer's precision (`trainer_cfg`; the CPU without one)."""
    encoder, tokenizer = load_splade(checkpoint)
    doc_ids = sorted({doc_id for listed in wanted.values() for doc_id in listed})
    with on_job_device(encoder, trainer_cfg or {}):
        query_vectors = dict(encode_texts(encoder, tokenizer, {q: queries[q] for q in wanted}, query_max_length))
        doc_vectors = dict(encode_texts(encoder, tokenizer, {d: corpus[d] for d in doc_ids}, doc_max_length))
    return {q: {d: dot(query_vectors[q], doc_vectors[d]) for d in listed} for q, listed in wanted.items()}


def cached_splade_scores(checkpoint: str | Path, queries: Mapping[str, str], corpus: Mapping[str, str],
                         wanted: Mapping[str, list[str]], cache_dir: str | Path, trainer_cfg=None) -> Scores:
    """splade_scores, kept in the shared cache keyed by checkpoint, texts and pairs: a sweep scores once."""
    inputs = {
        "checkpoint": folder_fingerprint(Path(checkpoint)),
        "pairs": fingerprint({q: [queries[q], [[d, corpus[d]] for d in listed]] for q, listed in wanted.items()}),
    }

    def score(folder: Path) -> dict:
        write_json_atomic(folder / "scores.json", splade_scores(checkpoint, queries, corpus, wanted, trainer_cfg=trainer_cfg))
        return {}

    folder, _ = StageStore(Path(cache_dir) / "teacher_scores").run(fingerprint(inputs), inputs, score)
    return json.loads((folder / "scores.json").read_text())


def bm25_pair_scores(index_dir: Path, documents: int, queries: Mapping[str, str], wanted: Mapping[str, list[str]],
                     threads: int, queries_per_search: int = 256) -> Scores:
    """{qid: {doc_id: BM25 score}} for every pair in `wanted`.

    Each query retrieves every document that matches it (k = the index's size), so a listed document
    missing from its hits shares no term with it and scores exactly 0. That costs a full ranking per
    query: right for SciFact-sized corpora; for MS MARCO give a score file in data.teacher.files.
    """
    query_ids = sorted(wanted)
    scores: Scores = {}
    for start in range(0, len(query_ids), queries_per_search):
        chunk = {q: queries[q] for q in query_ids[start:start + queries_per_search]}
        for query_id, hits in bm25_search(index_dir, chunk, k=documents, threads=threads).items():
            matched = dict(hits)
            scores[query_id] = {doc_id: matched.get(doc_id, 0.0) for doc_id in wanted[query_id]}
    return scores


def cached_bm25_scores(collection: Collection, wanted: Mapping[str, list[str]], cache_dir: str | Path,
                       threads: int) -> Scores:
    """bm25_pair_scores, cached beside the collection's BM25 index: a sweep scores once."""
    store, index_dir = bm25_store(collection, cache_dir)
    inputs = {"pairs": fingerprint({q: [collection.queries[q], listed] for q, listed in wanted.items()}),
              **BM25_PARAMETERS}

    def score(folder: Path) -> dict:
        scores = bm25_pair_scores(index_dir, len(collection.corpus), collection.queries, wanted, threads)
        write_json_atomic(folder / "scores.json", scores)
        return {}

    folder, _ = store.run(f"teacher-{fingerprint(inputs)}", inputs, score)
    return json.loads((folder / "scores.json").read_text())


# Each teacher scorer: (collection, {query id: document ids to score}, data.teacher section, ScoringWorkspace of
# training/dataset.py) -> (scores, its name in error messages).

@TEACHER_SCORERS.register("splade", own_scale=True)
def splade_teacher(collection: Collection, wanted: Mapping[str, list[str]], teacher_cfg, workspace) -> tuple[Scores, str]:
    scores = cached_splade_scores(teacher_cfg.checkpoint, collection.queries, collection.corpus, wanted,
                                  workspace.cache_dir, workspace.trainer)
    return scores, f"splade teacher {teacher_cfg.checkpoint}"


@TEACHER_SCORERS.register("bm25")
def bm25_teacher(collection: Collection, wanted: Mapping[str, list[str]], teacher_cfg, workspace) -> tuple[Scores, str]:
    return cached_bm25_scores(collection, wanted, workspace.cache_dir, workspace.search_threads), "bm25 teacher"
