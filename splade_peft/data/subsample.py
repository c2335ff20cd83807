"""A smaller, deterministic slice of a collection for quick runs: fewer queries, fewer documents."""

import dataclasses

from splade_peft.data.collection import Collection
from splade_peft.records import fingerprint, stable_seed


def subsample(collection: Collection, max_queries: int | None, max_documents: int | None, seed: int) -> Collection:
    """Keep `max_queries` queries and at most `max_documents` documents, never dropping a judged one.

    Every document judged for a kept query stays, so metrics remain well defined; the rest of the
    corpus is filled up with a seeded, order-independent choice of the other documents.
    """
    if not max_queries and not max_documents:
        return collection
    def by_draw(ids) -> list[str]:
        return sorted(ids, key=lambda item: stable_seed(seed, item))

    query_ids = by_draw(collection.queries)[: max_queries or None]
    judged = {doc_id for qid in query_ids for doc_id in collection.qrels[qid]}
    others = by_draw(set(collection.corpus) - judged)
    kept_documents = judged | set(others[: max(0, (max_documents or len(collection.corpus)) - len(judged))])
    return dataclasses.replace(
        collection,
        queries={qid: collection.queries[qid] for qid in collection.queries if qid in set(query_ids)},
        qrels={qid: collection.qrels[qid] for qid in query_ids},
        corpus={doc_id: text for doc_id, text in collection.corpus.items() if doc_id in kept_documents},
        fingerprint=fingerprint([collection.fingerprint, max_queries, max_documents, seed]),
    )
