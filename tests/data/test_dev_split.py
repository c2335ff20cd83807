"""The dev split carved from the training queries: whole groups of queries sharing relevant documents, so no
dev query asks for a document training sees as a positive; at least data.dev.queries; seeded, deterministic."""

import random

import pytest

from splade_peft.data.collection import Collection
from splade_peft.data.dev_split import DEV_SPLIT, carve_dev, query_groups
from splade_peft.errors import ConfigError
from splade_peft.records import fingerprint


def collection(qrels: dict[str, dict[str, int]], unjudged: tuple[str, ...] = ()) -> Collection:
    documents = {doc_id for judged in qrels.values() for doc_id in judged} | {"spare"}
    return Collection("toy", "train", {d: f"text {d}" for d in sorted(documents)},
                      {q: f"query {q}" for q in [*qrels, *unjudged]}, qrels, "toy-fp")


def random_collection(seed: int, queries: int = 120, documents: int = 150) -> Collection:
    rng = random.Random(seed)
    return collection({f"q{i}": {f"d{rng.randrange(documents)}": 1 for _ in range(rng.randint(1, 3))}
                       for i in range(queries)})


def relevant(collection: Collection) -> set[str]:
    return {doc_id for judged in collection.qrels.values() for doc_id, grade in judged.items() if grade > 0}


def test_queries_sharing_a_relevant_document_transitively_are_one_group():
    toy = collection({"a": {"d1": 1}, "b": {"d1": 1, "d2": 1}, "c": {"d2": 2}, "d": {"d3": 1}, "e": {"d1": 0, "d4": 1}})
    # e judged d1 non-relevant: a judgement of 0 is not a shared relevant document
    assert query_groups(toy) == [["a", "b", "c"], ["d"], ["e"]]


@pytest.mark.parametrize("seed", range(5))
def test_no_dev_query_shares_a_relevant_document_with_training(seed):
    full = random_collection(seed)
    split = carve_dev(full, 30, seed)
    assert relevant(split.dev).isdisjoint(relevant(split.training))
    assert len(split.dev.queries) >= 30 and split.dev.qrels.keys() == split.dev.queries.keys()
    assert split.training.queries.keys() | split.dev.queries.keys() == full.queries.keys()
    assert split.training.queries.keys().isdisjoint(split.dev.queries)


def test_whole_groups_are_taken_until_there_are_enough():
    toy = collection({"a": {"d1": 1}, "b": {"d1": 1}, "c": {"d1": 1}, "x": {"d2": 1}, "y": {"d3": 1}, "z": {"d4": 1}})
    for seed in range(10):
        dev = set(carve_dev(toy, 2, seed).dev.queries)
        assert dev >= {"a", "b", "c"} or ({"a", "b", "c"}.isdisjoint(dev) and len(dev) == 2)


def test_the_same_seed_carves_the_same_split_and_another_seed_another():
    full = random_collection(0)
    first, again, other = carve_dev(full, 30, 7), carve_dev(full, 30, 7), carve_dev(full, 30, 8)
    assert first == again
    assert set(first.dev.queries) != set(other.dev.queries)


def test_the_dev_collection_is_the_corpus_with_the_dev_queries_and_their_judgements():
    full = random_collection(1)
    split = carve_dev(full, 20, 0)
    assert split.dev.split == DEV_SPLIT and split.dev.corpus is full.corpus and split.training.corpus is full.corpus
    assert all(split.dev.qrels[q] == full.qrels[q] for q in split.dev.qrels)
    assert split.dev.fingerprint == fingerprint(sorted(split.dev.queries))
    assert split.training.fingerprint not in (full.fingerprint, split.dev.fingerprint)
    assert split.describe() == {"queries": len(split.dev.queries), "fingerprint": split.dev.fingerprint, "seed": 0}


def test_unjudged_queries_stay_in_training():
    split = carve_dev(collection({"a": {"d1": 1}, "b": {"d2": 1}}, unjudged=("u",)), 1, 0)
    assert "u" in split.training.queries and len(split.dev.queries) == 1


def test_no_queries_carve_no_split():
    assert carve_dev(random_collection(0), 0, 0) is None


def test_taking_every_training_query_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="^config key 'data.dev.queries': 3 takes every one of the 3"):
        carve_dev(collection({"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}}), 3, 0)
