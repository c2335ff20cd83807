"""A dev split carved from a collection's training queries, for choosing checkpoints and settings.

Queries that share a relevant document are kept together: a query and every query sharing a relevant
document with it, transitively, form one group, and whole groups go to dev. No dev query then asks for a
document training sees as a positive, so a choice made on dev rewards retrieving documents training never
saw, not remembering the ones it did.
"""

import dataclasses
import random
from dataclasses import dataclass

from splade_peft.data.collection import Collection
from splade_peft.data.config import DEV_SPLIT
from splade_peft.data.pairs import relevant_ids
from splade_peft.errors import ConfigError
from splade_peft.records import fingerprint


@dataclass(frozen=True)
class DevSplit:
    """The training collection without the dev queries, the dev collection (same corpus, the dev queries and
    their judgements), and what results.json records of it."""

    training: Collection
    dev: Collection
    seed: int

    def describe(self) -> dict:
        return {"queries": len(self.dev.queries), "fingerprint": self.dev.fingerprint, "seed": self.seed}


def query_groups(collection: Collection) -> list[list[str]]:
    """The judged queries in groups sharing relevant documents (connected components), each sorted, in
    the order of their first query id."""
    parent = {query_id: query_id for query_id in collection.qrels}

    def root(query_id: str) -> str:
        while parent[query_id] != query_id:
            parent[query_id] = parent[parent[query_id]]
            query_id = parent[query_id]
        return query_id

    first_asker: dict[str, str] = {}
    for query_id in sorted(collection.qrels):
        for doc_id in relevant_ids(collection, query_id):
            other = first_asker.setdefault(doc_id, query_id)
            parent[root(query_id)] = root(other)
    groups: dict[str, list[str]] = {}
    for query_id in sorted(collection.qrels):
        groups.setdefault(root(query_id), []).append(query_id)
    return sorted(groups.values())


def carve_dev(collection: Collection, queries: int, seed: int) -> DevSplit | None:
    """Whole groups of `collection`'s judged queries, in a seeded shuffled order, until at least `queries`
    are taken (data.dev.queries, data.dev.seed); None when `queries` is 0."""
    if not queries:
        return None
    groups = query_groups(collection)
    random.Random(seed).shuffle(groups)
    taken: list[str] = []
    for group in groups:
        if len(taken) >= queries:
            break
        taken.extend(group)
    dev_ids = set(taken)
    if len(dev_ids) == len(collection.qrels):
        raise ConfigError("data.dev.queries", f"{queries} takes every one of the {len(collection.qrels)} judged "
                          f"training queries of {collection.name}, leaving none to train on", "lower data.dev.queries")
    dev_fingerprint = fingerprint(sorted(dev_ids))
    return DevSplit(
        training=dataclasses.replace(
            collection,
            queries={qid: text for qid, text in collection.queries.items() if qid not in dev_ids},
            qrels={qid: judged for qid, judged in collection.qrels.items() if qid not in dev_ids},
            fingerprint=fingerprint([collection.fingerprint, "without dev", dev_fingerprint]),
        ),
        dev=dataclasses.replace(
            collection, split=DEV_SPLIT,
            queries={qid: text for qid, text in collection.queries.items() if qid in dev_ids},
            qrels={qid: judged for qid, judged in collection.qrels.items() if qid in dev_ids},
            fingerprint=dev_fingerprint,
        ),
        seed=seed,
    )
