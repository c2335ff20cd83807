"""Training examples (query, positive, negatives) built from a collection's train qrels."""

import hashlib
import random
from dataclasses import dataclass

from torch.utils.data import Dataset

from splade_peft.data.collections import Collection
from splade_peft.errors import ConfigError

NEGATIVE_SOURCES = ("bm25", "random")


@dataclass(frozen=True)
class TrainingPair:
    query_id: str
    positive_id: str
    candidates: tuple[str, ...]  # negatives to sample from, best-ranked first


def stable_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


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


def training_pairs(collection: Collection, candidates: dict, negatives: int) -> list[TrainingPair]:
    pairs = []
    for query_id in sorted(collection.queries):
        pool = candidates.get(query_id, ())
        if len(pool) < negatives:
            continue
        pairs.extend(TrainingPair(query_id, doc_id, pool) for doc_id in relevant_ids(collection, query_id))
    if not pairs:
        raise ConfigError(
            "data.negatives", f"no training query has {negatives} negative candidates",
            "lower data.negatives or raise data.negatives_depth",
        )
    return pairs


class TrainingSet(Dataset):
    """Each item draws `negatives` documents from its pair's candidate pool, seeded by (seed, epoch, index)."""

    def __init__(self, collection: Collection, pairs: list[TrainingPair], negatives: int, seed: int):
        self.collection, self.pairs, self.negatives, self.seed = collection, pairs, negatives, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        rng = random.Random(stable_seed(self.seed, self.epoch, index))
        negative_ids = rng.sample(pair.candidates, self.negatives)
        corpus = self.collection.corpus
        return {
            "query": self.collection.queries[pair.query_id],
            "documents": [corpus[pair.positive_id]] + [corpus[doc_id] for doc_id in negative_ids],
        }


class TrainingCollator:
    """Tokenises a list of items into one query batch and one document batch (groups back to back)."""

    def __init__(self, tokenizer, query_max_length: int, doc_max_length: int):
        self.tokenizer = tokenizer
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length

    def tokenize(self, texts: list[str], max_length: int) -> dict:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def __call__(self, items: list[dict]) -> dict:
        return {
            "queries": self.tokenize([item["query"] for item in items], self.query_max_length),
            "documents": self.tokenize([text for item in items for text in item["documents"]], self.doc_max_length),
            "docs_per_query": len(items[0]["documents"]),
        }
