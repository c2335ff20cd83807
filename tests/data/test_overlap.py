"""Evaluation queries split by whether training saw their relevant documents as positives."""

from splade_peft.data.collection import Collection
from splade_peft.data.overlap import query_groups

CORPUS = {"d1": "a", "d2": "b", "d3": "c", "d4": "d"}


def collection(qrels, corpus=CORPUS) -> Collection:
    return Collection("toy", "x", corpus, {q: q for q in qrels}, qrels, "f")


def test_queries_are_seen_unseen_or_neither():
    train = collection({"t1": {"d1": 1}, "t2": {"d2": 1, "d4": 0}})
    evaluated = collection({"e1": {"d1": 1}, "e2": {"d3": 1}, "e3": {"d1": 1, "d3": 1}, "e4": {"d4": 1}})
    assert query_groups(train, evaluated) == {"seen": ["e1"], "unseen": ["e2", "e4"]}  # d4 was judged 0 in training


def test_another_corpus_has_no_split():
    other = collection({"e1": {"d1": 1}}, corpus={"d1": "another text"})
    assert query_groups(collection({"t1": {"d1": 1}}), other) is None
