"""Which evaluation queries ask for documents training saw as positives. A gain on queries whose relevant
documents were trained on can be memorisation of those documents; only the queries whose documents training
never saw show whether the model learned to retrieve (the study protocol reports both)."""

from splade_peft.data.collection import Collection

SEEN, UNSEEN = "seen", "unseen"


def relevant(collection: Collection, query_id: str) -> set[str]:
    grade = collection.min_relevant_grade
    return {doc_id for doc_id, value in collection.qrels.get(query_id, {}).items() if value >= grade}


def shares_corpus(train: Collection, evaluated: Collection) -> bool:
    """Both are (slices of) one corpus: they have documents in common, each with the same text in both. (Ids
    alone do not say it: two collections numbering their documents 1, 2, ... share ids, not documents.)"""
    common = train.corpus.keys() & evaluated.corpus.keys()
    return bool(common) and all(train.corpus[doc_id] == evaluated.corpus[doc_id] for doc_id in common)


def query_groups(train: Collection, evaluated: Collection) -> dict[str, list[str]] | None:
    """{"seen": queries whose every relevant document is a training positive, "unseen": queries none of whose
    relevant documents is}; queries with some of each are in neither. None when the corpora differ."""
    if not shares_corpus(train, evaluated):
        return None
    positives = set().union(*(relevant(train, query_id) for query_id in train.qrels))
    groups = {SEEN: [], UNSEEN: []}
    for query_id in sorted(evaluated.qrels):
        wanted = relevant(evaluated, query_id)
        if wanted and wanted <= positives:
            groups[SEEN].append(query_id)
        elif not wanted & positives:
            groups[UNSEEN].append(query_id)
    return groups
