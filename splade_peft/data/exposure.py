"""What training did with each evaluation query's relevant documents. A gain on queries whose documents were
training positives can be memorisation; documents that sat in training's negative pools were pushed down
during training, so their queries are not "unseen" either. Only queries none of whose relevant documents
training touched show whether the model learned to retrieve (the study protocol reports all three).

Documents are matched by text, not id: a mined or mixed-in training set, or a training file with inline
texts, names documents of other corpora, and two corpora numbering their documents 1, 2, ... share ids,
not documents."""

from collections.abc import Iterable

from splade_peft.data.collection import Collection

SEEN, EXPOSED, UNSEEN = "seen", "exposed", "unseen"
# (positive text, texts of its negative pool): one per training example of a training set.
Examples = Iterable[tuple[str, Iterable[str]]]


def relevant_texts(collection: Collection, query_id: str) -> set[str]:
    grade = collection.min_relevant_grade
    return {collection.corpus[doc_id] for doc_id, value in collection.qrels.get(query_id, {}).items()
            if value >= grade and doc_id in collection.corpus}


def touched(examples: Examples, wanted: set[str]) -> tuple[set[str], set[str]]:
    """(the `wanted` texts training took as positives, those that sat in its negative pools)."""
    positives, pooled = set(), set()
    for positive, pool in examples:
        if positive in wanted:
            positives.add(positive)
        pooled.update(text for text in pool if text in wanted)
    return positives, pooled


def query_groups(examples: Examples, collections: dict[str, Collection]) -> dict[str, dict[str, list[str]]]:
    """{dataset: {"seen": queries whose every relevant document was a training positive, "exposed": queries none
    of whose relevant documents was a positive and some sat in a negative pool, "unseen": queries none of whose
    relevant documents training used}}, from one pass over the training examples. Queries with some positive and
    some other relevant documents are in no group; a dataset none of whose relevant documents training used (an
    out-of-domain corpus) has no split: it says nothing there."""
    wanted = {name: {query_id: relevant_texts(collection, query_id) for query_id in sorted(collection.qrels)}
              for name, collection in collections.items()}
    positives, pooled = touched(examples, {text for by_query in wanted.values() for texts in by_query.values()
                                           for text in texts})
    return {name: grouped(by_query, positives, pooled) for name, by_query in wanted.items()
            if any(texts & (positives | pooled) for texts in by_query.values())}


def grouped(relevant: dict[str, set[str]], positives: set[str], pooled: set[str]) -> dict[str, list[str]]:
    groups = {SEEN: [], EXPOSED: [], UNSEEN: []}
    for query_id, texts in relevant.items():
        if texts and texts <= positives:
            groups[SEEN].append(query_id)
        elif texts and not texts & positives:
            groups[EXPOSED if texts & pooled else UNSEEN].append(query_id)
    return groups
