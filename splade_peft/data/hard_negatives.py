"""Hard-negative training files in the layouts researchers have on disk, read lazily.

- FlagEmbedding JSONL: {"query", "pos": [texts], "neg": [texts], "pos_scores", "neg_scores"}; the mining
  command adds "query_id", "pos_ids", "neg_ids", which align a file with a collection's corpus.
- sentence-transformers msmarco-hard-negatives JSONL(.gz): {"qid", "pos": [pids], "neg": {system: [pids]}},
  with a separate {qid: {pid: score}} cross-encoder score file (see data/teachers.py).
- Triples TSV: query<TAB>positive<TAB>negative texts, one negative per line.

Plain JSONL and TSV files are memory-mapped and indexed by line offsets, so a 500k-query file costs
one offset array, not its parsed contents; a line is parsed when an item is asked for.
"""

import gzip
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

from torch.utils.data import Dataset

from splade_peft.data.collection import Collection
from splade_peft.data.teachers import Scores, record_scores, required_list
from splade_peft.data.lines import MappedLines
from splade_peft.errors import ConfigError, DataError
from splade_peft.records import stable_seed

log = logging.getLogger(__name__)

FLAGEMBEDDING_IDS = ("query_id", "pos_ids", "neg_ids")


# --- FlagEmbedding JSONL ------------------------------------------------------------------------------------

def mining_stats_path(mined: str | Path) -> Path:
    """mined.jsonl -> mined.stats.json beside it: what `python -m splade_peft.mine` records of its mining."""
    return Path(mined).with_suffix(".stats.json")


def mining_record(mined: str | Path) -> dict | None:
    """The mining stats of a mined file (retriever, filter, candidates removed per query), for results.json;
    None for a file mined elsewhere."""
    stats = mining_stats_path(mined)
    return {"file": str(mined), **json.loads(stats.read_text())} if stats.is_file() else None


def flagembedding_candidates(path: str | Path, collection: Collection, unknown_ids: str) -> tuple[dict, Scores | None]:
    """Negative pools {qid: neg_ids} for the collection's queries, and the file's teacher scores when it has them.

    Lines of other queries (a carved dev split's, mined with the rest of the split) are skipped and counted.
    A negative id not in the corpus raises (data.unknown_ids=error) or is dropped, counted and logged (drop).
    """
    lines = MappedLines(path)
    candidates, teacher, dropped, skipped = {}, {}, 0, 0
    for index in range(len(lines)):
        line, record = lines.json(index)
        missing = [field for field in FLAGEMBEDDING_IDS if field not in record]
        if missing:
            raise DataError(path, "has no document ids to align with the corpus", line, missing[0],
                            fix="mine it with `python -m splade_peft.mine`, or train on the file itself with data=flagembedding")
        query_id = str(record["query_id"])
        if query_id not in collection.queries:
            skipped += 1
            continue
        neg_ids = [str(d) for d in required_list(lines.path, line, record, "neg_ids", (str, int))]
        unknown = [d for d in neg_ids if d not in collection.corpus]
        if unknown and unknown_ids == "error":
            raise DataError(path, f"negative id '{unknown[0]}' is not in the corpus of {collection.name}", line, "neg_ids",
                            fix="mine negatives from this corpus, or set data.unknown_ids=drop to skip such ids")
        dropped += len(unknown)
        candidates[query_id] = tuple(d for d in neg_ids if d in collection.corpus)
        if "pos_scores" in record or "neg_scores" in record:
            teacher[query_id] = record_scores(lines.path, line, record)
    if not candidates:
        raise DataError(path, f"names none of the {len(collection.queries)} queries of {collection.name} "
                        f"({collection.split}): a file for another dataset or split?", fix="mine this training set")
    if dropped:
        log.warning("%s: dropped %d negative ids that are not in the corpus (data.unknown_ids=drop)", path, dropped)
    if skipped:
        log.info("%s: %d lines name queries outside %s's %d training queries (a carved dev split's?): not read",
                 path, skipped, collection.name, len(collection.queries))
    return candidates, (teacher or None)


class FlagEmbeddingSet(Dataset):
    """A FlagEmbedding file as the training set itself (texts inline): each item one positive and `negatives`
    sampled negatives, seeded by (seed, epoch, index), with the file's scores when `with_scores`."""

    def __init__(self, path: str | Path, negatives: int, seed: int, with_scores: bool):
        self.lines, self.negatives, self.seed, self.with_scores = MappedLines(path), negatives, seed, with_scores
        self.epoch = 0
        if not len(self.lines):
            raise DataError(path, "no training lines", fix="write one JSON object per line")

    def __len__(self) -> int:
        return len(self.lines)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def examples(self) -> Iterator[tuple[str, list[str]]]:
        """(positive text, the line's negative texts) per positive of each line (data/exposure.py)."""
        for index in range(len(self.lines)):
            _, record = self.lines.json(index)
            for positive in record.get("pos") or []:
                yield positive, record.get("neg") or []

    def __getitem__(self, index: int) -> dict:
        line, record = self.lines.json(index)
        path = self.lines.path
        query = record.get("query")
        if not isinstance(query, str):
            raise DataError(path, "missing or not a string", line, "query", fix="give every line a string 'query'")
        positives, negatives = (required_list(path, line, record, f, str) for f in ("pos", "neg"))
        if not positives or len(negatives) < self.negatives:
            raise DataError(path, f"{len(positives)} positives and {len(negatives)} negatives, need 1 and "
                            f"data.negatives={self.negatives}", line, "neg", fix="lower data.negatives or mine deeper")
        rng = random.Random(stable_seed(self.seed, self.epoch, index))
        positive = rng.randrange(len(positives))
        chosen = rng.sample(range(len(negatives)), self.negatives)
        item = {"query": query, "documents": [positives[positive]] + [negatives[i] for i in chosen]}
        if self.with_scores:
            pos_scores, neg_scores = (required_list(path, line, record, f, (int, float)) for f in ("pos_scores", "neg_scores"))
            if len(pos_scores) != len(positives) or len(neg_scores) != len(negatives):
                raise DataError(path, "scores and texts differ in length", line, "neg_scores", fix="one score per text")
            item["teacher_scores"] = [float(pos_scores[positive])] + [float(neg_scores[i]) for i in chosen]
        return item


# --- sentence-transformers msmarco-hard-negatives --------------------------------------------------------------

def st_hard_negative_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as stream:
        for line, text in enumerate(stream, start=1):
            if text.strip():
                yield line, json.loads(text)


def st_hard_negative_candidates(path: str | Path, systems: list[str] | None, depth: int) -> dict[str, tuple[str, ...]]:
    """{qid: pool}: for each query, the negatives the named retrieval systems (all when None) mined,
    interleaved system by system up to `depth`, duplicates and positives left out."""
    candidates = {}
    for line, record in st_hard_negative_records(path):
        if "qid" not in record or not isinstance(record.get("neg"), dict):
            raise DataError(path, "not a msmarco-hard-negatives line", line, "neg",
                            fix='expect {"qid": .., "pos": [pids], "neg": {system: [pids]}}')
        unknown = sorted(set(systems or ()) - set(record["neg"]))
        if unknown:
            raise ConfigError("data.hard_negatives.systems", f"'{unknown[0]}' is not in {path} (line {line} has "
                              f"{', '.join(sorted(record['neg']))})", "name systems the file has, or null for all")
        positives = {str(p) for p in record.get("pos", [])}
        lists = [record["neg"][s] for s in (systems or sorted(record["neg"]))]
        pool = dict.fromkeys(str(pid) for rank in zip(*lists) for pid in rank if str(pid) not in positives)
        candidates[str(record["qid"])] = tuple(pool)[:depth]
    return candidates


# --- triples TSV ---------------------------------------------------------------------------------------------

class TriplesSet(Dataset):
    """query<TAB>positive<TAB>negative texts, one training item per line (one negative by construction)."""

    def __init__(self, path: str | Path, negatives: int):
        if negatives != 1:
            raise ConfigError("data.negatives", f"{negatives}: a triples file holds one negative per query",
                              "set data.negatives=1, or use a layout with several negatives per query")
        self.lines = MappedLines(path)

    def __len__(self) -> int:
        return len(self.lines)

    def examples(self) -> Iterator[tuple[str, list[str]]]:
        for index in range(len(self.lines)):
            columns = self.lines[index][1].split("\t")
            if len(columns) == 3:
                yield columns[1], [columns[2]]

    def __getitem__(self, index: int) -> dict:
        line, text = self.lines[index]
        columns = text.split("\t")
        if len(columns) != 3:
            raise DataError(self.lines.path, f"{len(columns)} tab-separated columns, expected 3", line,
                            fix="write query<TAB>positive<TAB>negative")
        return {"query": columns[0], "documents": columns[1:]}
