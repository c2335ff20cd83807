"""Quantised SPLADE vectors -> Anserini JsonVectorCollection shards -> Lucene impact index.

Documents whose vector is empty (after dropping weights <= 0) are not written: Anserini would skip
them anyway (its "empty" counter), and a document without terms can never match a query, so every
search result list is the same with or without them. `ExactImpactSearcher` likewise returns only
documents with a positive score. Skipping them here keeps the check "indexed == written" strict.
"""

import json
import numbers
import queue
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from splade_peft.errors import IndexingError
from splade_peft.index.encode import SparseBatch
from splade_peft.index.pyserini_env import anserini_jar, java_binary, java_complaint
from splade_peft.index.sparsity import SparsityCounter
from splade_peft.progress import bar
from splade_peft.records import staged

_WHITESPACE = re.compile(r"\s")
# Anserini prints counts with thousands separators: "indexed:  5,194".
_COUNTER = re.compile(r"\b(indexed|unindexable|empty|skipped|errors):\s+([\d,]+)\s*$", re.MULTILINE)


# Encoded batches waiting for the writer thread: enough to absorb a slow write, few enough that memory stays flat.
WRITE_QUEUE_BATCHES = 4
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class IndexStats:
    documents: int
    seconds: float


def quantize(vector: Mapping[str, float], factor: float) -> dict[str, int]:
    """Scale to integer impacts, dropping entries that become <= 0."""
    # Lucene truncates impacts to int, so we quantise first; rounding halves the worst-case error of truncation.
    scaled = {term: int(round(float(weight) * factor)) for term, weight in vector.items()}
    return {term: weight for term, weight in scaled.items() if weight > 0}


def positive_impacts(vector: Mapping[str, int]) -> dict[str, int]:
    """The entries an impact index can score: integer weights > 0 (a 0-weight query term would still match, at score 0)."""
    impacts = {}
    for term, weight in vector.items():
        if not isinstance(weight, numbers.Integral):
            raise TypeError(f"impact weight of {term!r} is {weight!r}, not an int -- quantize() the vector first")
        if weight > 0:
            impacts[term] = int(weight)
    return impacts


def write_vector_collection(docs: Iterable[tuple[str, Mapping[str, int]]], folder: Path, shards: int) -> int:
    """Write `folder/part-00000.jsonl`... round-robin (folder is replaced as a whole); returns documents written.

    Documents with an empty vector are left out (see module docstring), so the return value is the
    number of documents the index will hold.
    """
    return write_jsonl_shards(_vector_records(docs), folder, shards)


def write_impact_batches(batches: Iterable[SparseBatch], terms: Sequence[str], folder: Path, shards: int,
                         counter: SparsityCounter, total: int | None = None) -> int:
    """write_vector_collection over the documents of `batches` (quantised: encode.encoded_batches with a
    quantization), each counted into `counter`. The JSON is written by a background thread while this thread
    produces the batches, so the encoder's device does not wait on the files; returns documents written."""
    def documents(batches: Iterable[SparseBatch]) -> Iterator[tuple[str, dict[str, int]]]:
        for batch in batches:
            for doc_id, impacts in batch.vectors(terms):
                counter.add(impacts)
                yield doc_id, impacts

    return consumed_in_background(batches, lambda received: write_vector_collection(
        bar(documents(received), total=total, desc="encoding documents"), folder, shards))


class _ProducerFailed(Exception):
    """Raised inside the consumer when the producer failed, so that the consumer unwinds (staged folders removed)."""


def consumed_in_background(items: Iterable[Item], consume: Callable[[Iterator[Item]], Result],
                           depth: int = WRITE_QUEUE_BATCHES) -> Result:
    """consume(iterator over `items`) run in a thread, fed through a queue of `depth` items while this thread
    produces them. An exception on either side stops both and is raised here."""
    channel: queue.Queue = queue.Queue(depth)
    done, failed = object(), object()

    def received() -> Iterator[Item]:
        while (item := channel.get()) is not done:
            if item is failed:
                raise _ProducerFailed
            yield item

    with ThreadPoolExecutor(1, thread_name_prefix="writer") as pool:
        consumer = pool.submit(consume, received())
        try:
            for item in items:
                _hand_over(channel, item, consumer)
        except BaseException:
            _hand_over(channel, failed, consumer, raise_failure=False)
            consumer.exception()  # wait for it to unwind before this exception propagates
            raise
        _hand_over(channel, done, consumer)
        return consumer.result()


def _hand_over(channel: queue.Queue, item, consumer: Future, raise_failure: bool = True) -> None:
    """Put `item` in the queue, waiting while it is full, unless the consumer has stopped: then its exception
    is raised (or nothing, with raise_failure=False)."""
    while True:
        if consumer.done():
            if raise_failure:
                consumer.result()
                raise IndexingError("the vector writer stopped before the last document")
            return
        try:
            channel.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def read_vector_collection(folder: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(id, {term: impact}) of every document written by `write_vector_collection` (or an encoding shard) into
    `folder`, file by file: what the in-memory engines index, read back as the Lucene indexer reads it."""
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise IndexingError(f"{folder}: no *.jsonl vector files -- write the collection first")
    for path in files:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    record = json.loads(line)
                    yield record["id"], record["vector"]


def build_impact_index(collection_dir: Path, index_dir: Path, threads: int) -> IndexStats:
    """Index a JsonVectorCollection as a Lucene impact index (weights stored as term frequencies)."""
    return run_anserini_indexer("JsonVectorCollection", collection_dir, index_dir, threads, ["-impact", "-pretokenized"])


def write_jsonl_shards(records: Iterable[dict], folder: Path, shards: int) -> int:
    """Write records round-robin into `shards` jsonl files (Anserini indexes one file per thread), atomically."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    written = 0
    with staged(folder, folder=True) as tmp, ExitStack() as stack:
        files = [stack.enter_context(open(tmp / f"part-{i:05d}.jsonl", "w", encoding="utf-8")) for i in range(shards)]
        for record in records:
            files[written % shards].write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    return written


def run_anserini_indexer(collection: str, collection_dir: Path, index_dir: Path, threads: int,
                         flags: Sequence[str]) -> IndexStats:
    """Run Anserini's IndexCollection in a subprocess into a staging folder, check the count, rename into place."""
    expected = count_collection_documents(collection_dir)
    with staged(index_dir, folder=True) as tmp:
        command = [str(java_binary()), "-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
                   "-collection", collection, "-input", str(collection_dir), "-index", str(tmp),
                   "-threads", str(threads), *flags]
        start = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        _check_indexing(finished, expected, collection_dir)
        seconds = time.perf_counter() - start
    return IndexStats(documents=expected, seconds=seconds)


def count_collection_documents(collection_dir: Path) -> int:
    files = sorted(Path(collection_dir).glob("*.jsonl"))
    if not files:
        raise IndexingError(f"{collection_dir}: no *.jsonl files to index -- write the collection first")
    count = 0
    for path in files:
        with open(path, encoding="utf-8") as lines:
            count += sum(1 for line in lines if line.strip())
    return count


def _vector_records(docs: Iterable[tuple[str, Mapping[str, int]]]) -> Iterator[dict]:
    seen_ids: set[str] = set()
    checked_terms: set[str] = set()
    for doc_id, vector in docs:
        _check_new_id(doc_id, seen_ids)
        impacts = positive_impacts(vector)
        for term in impacts.keys() - checked_terms:
            _check_term(doc_id, term)
            checked_terms.add(term)
        if impacts:
            yield {"id": doc_id, "contents": "", "vector": impacts}


def _check_new_id(doc_id: str, seen_ids: set[str]) -> None:
    if not isinstance(doc_id, str):
        raise TypeError(f"document id {doc_id!r} is a {type(doc_id).__name__}; ids must be str")
    if doc_id in seen_ids:
        raise IndexingError(f"document id {doc_id!r} occurs twice -- ids must be unique")
    seen_ids.add(doc_id)


def _check_term(doc_id: str, term: str) -> None:
    # The pretokenized indexer splits on whitespace: "a b" would silently become two terms.
    if not term or _WHITESPACE.search(term):
        raise IndexingError(f"document {doc_id!r} has term {term!r}, which is empty or contains whitespace "
                            "-- map it to a whitespace-free token before indexing")


def _check_indexing(finished: subprocess.CompletedProcess, expected: int, collection_dir: Path) -> None:
    output = finished.stdout + "\n" + finished.stderr
    if finished.returncode != 0:
        raise IndexingError(f"Anserini IndexCollection exited with {finished.returncode} on {collection_dir}: "
                            f"{java_complaint(output)}")
    counters = {name: int(value.replace(",", "")) for name, value in _COUNTER.findall(output)}
    if counters.get("indexed") != expected:
        # Anserini exits 0 even when a corrupt line aborts a whole file; the count is what catches it.
        raise IndexingError(f"Anserini indexed {counters.get('indexed', '?')} of {expected} documents from "
                            f"{collection_dir} (counters {counters}): {java_complaint(output)}")
