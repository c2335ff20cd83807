"""Training pairs, negative sampling and the quick-run slices are deterministic and never leak positives."""

import pytest

from splade_peft.data.collection import Collection
from splade_peft.data.subsample import subsample
from splade_peft.data.pairs import (
    TrainingCollator, TrainingSet, bm25_candidates, random_candidates, same_query_positives, training_pairs,
)
from tests.helpers import tiny_tokenizer
from splade_peft.errors import ConfigError


@pytest.fixture
def collection() -> Collection:
    corpus = {f"d{i}": f"document {i}" for i in range(20)}
    queries = {"q1": "first", "q2": "second", "q3": "third"}
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2, "d4": 1}, "q3": {"d5": 1}}
    return Collection("toy", "train", corpus, queries, qrels, "0" * 16)


def test_bm25_candidates_skip_relevant_documents_and_keep_rank_order(collection):
    run = {"q1": [("d1", 9.0), ("d7", 8.0), ("d2", 7.0), ("d9", 6.0)]}
    candidates = bm25_candidates(collection, run, depth=2)
    assert candidates["q1"] == ("d7", "d2")  # d2 is judged non-relevant (grade 0): a fair negative
    assert candidates["q2"] == ()


def test_random_candidates_are_seeded_and_exclude_positives(collection):
    first, again = random_candidates(collection, 5, seed=1), random_candidates(collection, 5, seed=1)
    assert first == again and first != random_candidates(collection, 5, seed=2)
    assert not {"d3", "d4"} & set(first["q2"]) and all(len(pool) == 5 for pool in first.values())


def test_one_training_pair_per_relevant_document(collection):
    pairs = training_pairs(collection, random_candidates(collection, 5, seed=0), negatives=2)
    assert sorted((p.query_id, p.positive_id) for p in pairs) == [("q1", "d1"), ("q2", "d3"), ("q2", "d4"), ("q3", "d5")]


def test_asking_for_more_negatives_than_any_pool_holds_names_the_key(collection):
    with pytest.raises(ConfigError, match="data.negatives"):
        training_pairs(collection, random_candidates(collection, 3, seed=0), negatives=4)


def test_negatives_are_redrawn_per_epoch_but_reproducibly(collection):
    pairs = training_pairs(collection, random_candidates(collection, 10, seed=0), negatives=3)
    dataset = TrainingSet(collection, pairs, negatives=3, seed=7)
    epoch0 = [dataset[i]["documents"] for i in range(len(dataset))]
    assert epoch0 == [dataset[i]["documents"] for i in range(len(dataset))]
    dataset.set_epoch(1)
    assert epoch0 != [dataset[i]["documents"] for i in range(len(dataset))]
    assert all(docs[0] == collection.corpus[p.positive_id] for docs, p in zip(epoch0, pairs))


def test_subsample_keeps_judged_documents_and_is_deterministic(collection):
    small = subsample(collection, max_queries=2, max_documents=6, seed=3)
    assert len(small.queries) == 2 and len(small.corpus) == 6
    assert all(doc_id in small.corpus for judged in small.qrels.values() for doc_id in judged)
    assert small == subsample(collection, max_queries=2, max_documents=6, seed=3)
    assert small.fingerprint != collection.fingerprint
    assert subsample(collection, None, None, seed=3) is collection


def test_two_pairs_of_one_query_never_serve_as_each_others_negatives(collection):
    pairs = [pair for pair in training_pairs(collection, random_candidates(collection, 5, seed=0), 1)]
    dataset = TrainingSet(collection, pairs, negatives=1, seed=0)
    items = [dataset[i] for i, pair in enumerate(pairs) if pair.query_id in ("q2", "q3")]  # q2 has 2 positives
    batch = TrainingCollator(tiny_tokenizer(), 8, 8)(items)
    # rows: q2/d3, q2/d4, q3/d5; columns: [d3, neg], [d4, neg], [d5, neg]
    assert batch["false_negatives"].tolist() == [
        [False, False, True, False, False, False],
        [True, False, False, False, False, False],
        [False] * 6,
    ]


def test_a_document_equal_to_the_querys_positive_is_masked_wherever_it_appears():
    mask = same_query_positives(["q", "r"], ["pos", "x", "y", "pos"], 2)
    assert mask.tolist() == [[False, False, False, True], [False, False, False, False]]
