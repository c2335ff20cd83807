"""Training examples (query, positive, negatives) built from a collection's train qrels."""

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Dataset

from splade_peft.data.collection import Collection
from splade_peft.data.teachers import Scores
from splade_peft.errors import ConfigError, DataError
from splade_peft.records import stable_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPair:
    query_id: str
    positive_id: str
    candidates: tuple[str, ...]  # negatives to sample from, best-ranked first


def relevant_ids(collection: Collection, query_id: str) -> list[str]:
    return sorted(doc_id for doc_id, grade in collection.qrels[query_id].items() if grade > 0)


def bm25_candidates(collection: Collection, bm25_run: dict[str, list[tuple[str, float]]], depth: int) -> dict:
    """Hard negatives: the top BM25 hits of each training query that are not judged relevant."""
    candidates = {}
    for query_id in collection.queries:
        positives = set(relevant_ids(collection, query_id))
        hits = [doc_id for doc_id, _ in bm25_run.get(query_id, []) if doc_id not in positives]
        candidates[query_id] = tuple(hits[:depth])
    return candidates


def random_candidates(collection: Collection, depth: int, seed: int) -> dict:
    doc_ids = sorted(collection.corpus)
    candidates = {}
    for query_id in collection.queries:
        positives = set(relevant_ids(collection, query_id))
        sampled = random.Random(stable_seed(seed, query_id)).sample(doc_ids, min(len(doc_ids), depth + len(positives)))
        candidates[query_id] = tuple(doc_id for doc_id in sampled if doc_id not in positives)[:depth]
    return candidates


def training_pairs(collection: Collection, candidates: dict, negatives: int,
                   withheld: frozenset[str] = frozenset()) -> list[TrainingPair]:
    """One pair per relevant document of each training query with at least `negatives` candidates, the
    `withheld` documents (a carved dev split's relevant ones) taken out of every pool: training pushing them
    down as negatives would bias the dev figure that chooses."""
    pairs, removed = [], 0
    for query_id in sorted(collection.queries):
        offered = candidates.get(query_id, ())
        pool = tuple(doc_id for doc_id in offered if doc_id not in withheld)
        removed += len(offered) - len(pool)
        if len(pool) < negatives:
            continue
        pairs.extend(TrainingPair(query_id, doc_id, pool) for doc_id in relevant_ids(collection, query_id))
    if not pairs:
        raise ConfigError(
            "data.negatives", f"no training query has {negatives} negative candidates",
            "lower data.negatives or raise data.negatives_depth",
        )
    if removed:
        log.info("%d negative candidates are relevant to dev queries: left out of the pools", removed)
    return pairs


def teacher_scored_pairs(pairs: list[TrainingPair], teacher: Scores, negatives: int, missing: str,
                         origin: str) -> list[TrainingPair]:
    """Keep only what the teacher scored: under `missing=error` an unscored (query, document) pair raises;
    under `skip` it leaves the pool (or, for a positive, the pair leaves), counted and logged."""
    kept, skipped_pairs, dropped_negatives = [], 0, 0
    for pair in pairs:
        scored = teacher.get(pair.query_id, {})
        unscored = [doc_id for doc_id in (pair.positive_id, *pair.candidates) if doc_id not in scored]
        if unscored and missing == "error":
            raise DataError(origin, f"no teacher score for (query '{pair.query_id}', document '{unscored[0]}')",
                            field=f"{pair.query_id}/{unscored[0]}",
                            fix="score every training pair, or set data.teacher.missing=skip to drop such pairs "
                                "(counted and logged)")
        pool = tuple(doc_id for doc_id in pair.candidates if doc_id in scored)
        dropped_negatives += len(pair.candidates) - len(pool)
        if pair.positive_id not in scored or len(pool) < negatives:
            skipped_pairs += 1
            continue
        kept.append(replace(pair, candidates=pool))
    if skipped_pairs or dropped_negatives:
        log.warning("%s: data.teacher.missing=skip dropped %d unscored negatives and %d of %d training pairs "
                    "(unscored positive, or fewer than %d scored negatives left)",
                    origin, dropped_negatives, skipped_pairs, len(pairs), negatives)
    if not kept:
        raise DataError(origin, "no training pair is left with teacher scores", fix="give the teacher of this data")
    return kept


def rank_weighted_sample(rng: random.Random, pool: tuple[str, ...], scores: dict[str, float], count: int) -> list[str]:
    """`count` documents without replacement, the one ranked r-th by teacher score with weight 1 / r
    (Efraimidis-Spirakis keys u^(1/w): written out because `random` has no weighted sampling without replacement)."""
    ranked = sorted(pool, key=lambda doc_id: -scores[doc_id])
    keys = [rng.random() ** rank for rank in range(1, len(ranked) + 1)]
    chosen = sorted(range(len(ranked)), key=lambda i: -keys[i])[:count]
    return [ranked[i] for i in sorted(chosen)]


class TrainingSet(Dataset):
    """Each item draws `negatives` documents from its pair's candidate pool, seeded by (seed, epoch, index):
    uniformly, or weighted by teacher rank (`teacher_rank`); with a teacher, items carry its scores."""

    def __init__(self, collection: Collection, pairs: list[TrainingPair], negatives: int, seed: int,
                 teacher: Scores | None = None, sampling: str = "uniform"):
        if sampling == "teacher_rank" and teacher is None:
            raise ConfigError("data.sampling", "teacher_rank needs teacher scores",
                              "set data.teacher.files or data.teacher.scorers, or use data.sampling=uniform")
        self.collection, self.pairs, self.negatives, self.seed = collection, pairs, negatives, seed
        self.teacher, self.sampling = teacher, sampling
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def examples(self) -> Iterator[tuple[str, Iterator[str]]]:
        """(positive text, its negative pool's texts) per pair: what training can draw (data/exposure.py)."""
        corpus = self.collection.corpus
        for pair in self.pairs:
            yield corpus[pair.positive_id], (corpus[doc_id] for doc_id in pair.candidates)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        rng = random.Random(stable_seed(self.seed, self.epoch, index))
        if self.sampling == "teacher_rank":
            negative_ids = rank_weighted_sample(rng, pair.candidates, self.teacher[pair.query_id], self.negatives)
        else:
            negative_ids = rng.sample(pair.candidates, self.negatives)
        doc_ids = [pair.positive_id, *negative_ids]
        item = {
            "query": self.collection.queries[pair.query_id],
            "documents": [self.collection.corpus[doc_id] for doc_id in doc_ids],
        }
        if self.teacher is not None:
            item["teacher_scores"] = [self.teacher[pair.query_id][doc_id] for doc_id in doc_ids]
        return item


def same_query_positives(queries: list[str], documents: list[str], docs_per_query: int) -> torch.Tensor:
    """(queries, documents) True where a document of the batch is a positive of the row's query other than
    the row's own positive: with one pair per relevant document, two pairs of one query can share a batch,
    and in-batch InfoNCE would push each one's positive away as the other's negative. Texts are the keys
    (every training set has them, ids not): a document with the same text as a positive is one too."""
    positives: dict[str, set[str]] = {}
    for row, query in enumerate(queries):
        positives.setdefault(query, set()).add(documents[row * docs_per_query])
    return torch.tensor([[column != row * docs_per_query and document in positives[query]
                          for column, document in enumerate(documents)] for row, query in enumerate(queries)],
                        dtype=torch.bool)


class TrainingCollator:
    """Tokenises a list of items into one query batch and one document batch (groups back to back), and
    marks the in-batch false negatives (`same_query_positives`)."""

    def __init__(self, tokenizer, query_max_length: int, doc_max_length: int):
        self.tokenizer = tokenizer
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length

    def tokenize(self, texts: list[str], max_length: int) -> dict:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def __call__(self, items: list[dict]) -> dict:
        queries = [item["query"] for item in items]
        documents = [text for item in items for text in item["documents"]]
        docs_per_query = len(items[0]["documents"])
        batch = {
            "queries": self.tokenize(queries, self.query_max_length),
            "documents": self.tokenize(documents, self.doc_max_length),
            "docs_per_query": docs_per_query,
            "false_negatives": same_query_positives(queries, documents, docs_per_query),
        }
        if "teacher_scores" in items[0]:
            batch["teacher_scores"] = torch.tensor([item["teacher_scores"] for item in items], dtype=torch.float32)
        return batch
