"""MS MARCO passage files as distributed: collection.tsv (pid<TAB>text, 8.8M lines, memory-mapped),
topic files (qid<TAB>text: queries.train.tsv, MS MARCO dev, TREC DL 2019/2020 topics) and TREC qrels
(qid 0|Q0 pid grade). `load_msmarco` assembles one evaluation or training collection from them."""

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from splade_peft.data.collection import Collection
from splade_peft.data.lines import MappedLines
from splade_peft.errors import ConfigError, DataError

TSV_FIX = "write id<TAB>text, one per line"


class MappedCorpus(Mapping):
    """{pid: text} over a collection.tsv without loading it: one offset per line and a sorted id array."""

    def __init__(self, path: str | Path):
        self.lines = MappedLines(path)
        ids = [self.lines.buffer[start:self.lines.buffer.find(b"\t", start, stop)].decode()
               for start, stop in zip(self.lines.starts, self.lines.stops)]
        self.order = np.argsort(np.array(ids, dtype=object)) if ids else np.array([], dtype=np.int64)
        self.sorted_ids = np.array(ids, dtype=object)[self.order] if ids else np.array([], dtype=object)

    def position(self, pid: str) -> int | None:
        found = int(np.searchsorted(self.sorted_ids, pid))
        return int(self.order[found]) if found < len(self.sorted_ids) and self.sorted_ids[found] == pid else None

    def __getitem__(self, pid: str) -> str:
        position = self.position(pid)
        if position is None:
            raise KeyError(pid)
        line, text = self.lines[position]
        columns = text.split("\t")
        if len(columns) < 2:
            raise DataError(self.lines.path, "no tab between id and text", line, fix=TSV_FIX)
        return columns[1]

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, str) and self.position(pid) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.sorted_ids.tolist())

    def __len__(self) -> int:
        return len(self.sorted_ids)


def read_topics(path: str | Path) -> dict[str, str]:
    topics = {}
    for index in range(len(lines := MappedLines(path))):
        line, text = lines[index]
        columns = text.split("\t")
        if len(columns) != 2 or not columns[1].strip():
            raise DataError(path, f"{len(columns)} tab-separated columns, expected 2", line, fix=TSV_FIX)
        if columns[0] in topics:
            raise DataError(path, f"duplicate query id '{columns[0]}'", line, fix="one line per query")
        topics[columns[0]] = columns[1].strip()
    return topics


def read_trec_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for index in range(len(lines := MappedLines(path))):
        line, text = lines[index]
        columns = text.split()
        if len(columns) != 4 or not columns[3].lstrip("-").isdigit():
            raise DataError(path, "expected 'qid iteration pid grade' with an integer grade", line,
                            fix="write TREC qrels: qid 0 pid grade")
        qrels.setdefault(columns[0], {})[columns[2]] = int(columns[3])
    return qrels


# data.source=msmarco: the file names the MS MARCO and TREC DL distributions (and Anserini) use, per split.
SPLIT_FILES = {
    "train": ("queries.train.tsv", "qrels.train.tsv"),
    "dev": ("topics.msmarco-passage.dev-subset.txt", "qrels.msmarco-passage.dev-subset.txt"),
    "dl19": ("topics.dl19-passage.txt", "qrels.dl19-passage.txt"),
    "dl20": ("topics.dl20.txt", "qrels.dl20-passage.txt"),
}
# TREC DL grades 1 "related": the track's MRR and recall count grades 2 and 3 as relevant.
MIN_RELEVANT_GRADE = {"dl19": 2, "dl20": 2}
CORPUS_FILE = "collection.tsv"


def load_msmarco_folder(folder: Path, split: str, name: str | None = None) -> Collection:
    """One split of an MS MARCO passage folder: collection.tsv beside the split's topics and qrels (SPLIT_FILES)."""
    if split not in SPLIT_FILES:
        raise ConfigError("data.train_split|data.eval_split", f"unknown MS MARCO split {split!r}",
                          f"use one of: {', '.join(SPLIT_FILES)}")
    topics, qrels = SPLIT_FILES[split]
    for file in (CORPUS_FILE, topics, qrels):
        if not (folder / file).is_file():
            raise DataError(folder / file, "missing",
                            fix=f"put {CORPUS_FILE} and, per split, its topics and qrels in {folder}: "
                                + "; ".join(f"{s}: {t} + {q}" for s, (t, q) in SPLIT_FILES.items()))
    collection = load_msmarco(folder / CORPUS_FILE, folder / topics, folder / qrels, name or "msmarco-passage", split)
    return replace(collection, min_relevant_grade=MIN_RELEVANT_GRADE.get(split, 1))


def load_msmarco(corpus: str | Path, topics: str | Path, qrels: str | Path, name: str, split: str) -> Collection:
    """The judged topics of `qrels`; a judged query or passage missing from the topics or the corpus is a DataError."""
    documents, queries, judgements = MappedCorpus(corpus), read_topics(topics), read_trec_qrels(qrels)
    for query_id, grades in judgements.items():
        if query_id not in queries:
            raise DataError(qrels, f"query id '{query_id}' is not in {topics}", field="qid", fix="use the matching topic file")
        unknown = next((pid for pid in grades if pid not in documents), None)
        if unknown is not None:
            raise DataError(qrels, f"passage id '{unknown}' is not in {corpus}", field="pid", fix="use the full collection.tsv")
    digest = hashlib.sha256()
    for file in (topics, qrels):
        digest.update(Path(file).read_bytes())
    digest.update(f"{Path(corpus).stat().st_size}:{len(documents)}".encode())
    judged = {query_id: queries[query_id] for query_id in judgements}
    return Collection(name, split, documents, judged, judgements, digest.hexdigest()[:16])
