"""Evaluation queries split by what training did with their relevant documents: positives (seen), negative
pools (exposed), or nothing (unseen); and the dev split's relevant documents kept out of every pool."""

from splade_peft.data.collection import Collection
from splade_peft.data.exposure import query_groups
from splade_peft.data.pairs import TrainingSet, training_pairs
from splade_peft.training.datamodule import dev_relevant

CORPUS = {f"d{i}": f"text {i}" for i in range(1, 8)}


def collection(qrels, corpus=CORPUS) -> Collection:
    return Collection("toy", "x", corpus, {q: f"query {q}" for q in qrels}, qrels, "f")


EVALUATED = collection({"e1": {"d1": 1}, "e2": {"d3": 1}, "e3": {"d1": 1, "d3": 1}, "e4": {"d5": 1}, "e5": {"d6": 1}})


def test_queries_are_seen_exposed_unseen_or_none():
    train = collection({"t1": {"d1": 1}, "t2": {"d2": 1}})
    pairs = training_pairs(train, {"t1": ("d3", "d4"), "t2": ("d4", "d5")}, negatives=1)
    groups = query_groups(TrainingSet(train, pairs, 1, seed=0).examples(), {"toy": EVALUATED})
    # e3: one relevant document a positive, one in a pool: no group; d6 was never used.
    assert groups == {"toy": {"seen": ["e1"], "exposed": ["e2", "e4"], "unseen": ["e5"]}}


def test_a_query_filtered_out_of_training_leaves_its_positives_unseen():
    """A filter (PercPos, a teacher's missing scores) that drops a training query's pairs: its relevant documents
    were not trained on, though the qrels list them."""
    train = collection({"t1": {"d1": 1}, "t2": {"d3": 1}})
    pairs = training_pairs(train, {"t1": ("d4",), "t2": ()}, negatives=1)  # t2 lost its negatives
    groups = query_groups(TrainingSet(train, pairs, 1, seed=0).examples(), {"toy": EVALUATED})
    assert groups["toy"] == {"seen": ["e1"], "exposed": [], "unseen": ["e2", "e4", "e5"]}


def test_documents_are_matched_by_text_across_corpora():
    """A training file or a mixture names documents by text: the same text under another id is the same document,
    and a corpus none of whose relevant documents training used has no split."""
    examples = [("text 3", ["text 5"])]
    renumbered = collection({"q": {"x": 1}}, corpus={"x": "text 3"})
    other = collection({"q": {"x": 1}}, corpus={"x": "another text"})
    assert query_groups(examples, {"renumbered": renumbered, "other": other}) == {
        "renumbered": {"seen": ["q"], "exposed": [], "unseen": []}}


def test_dev_relevant_documents_leave_every_negative_pool():
    train = collection({"t1": {"d1": 1}, "t2": {"d2": 1}})
    dev = collection({"v1": {"d4": 2, "d7": 0}})
    pairs = training_pairs(train, {"t1": ("d3", "d4"), "t2": ("d4", "d5", "d7")}, negatives=1,
                           withheld=dev_relevant(dev))
    assert {pair.query_id: pair.candidates for pair in pairs} == {"t1": ("d3",), "t2": ("d5", "d7")}
    assert dev_relevant(None) == frozenset()
