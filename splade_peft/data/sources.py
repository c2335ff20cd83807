"""Retrieval collections (corpus, judged queries, graded judgements of one split), validated while they stream in.

Sources: a BEIR-layout folder, the project's embedded stdlib-docstrings collection (built offline on first use),
or the Hugging Face hub / ir_datasets for users with a network. Every problem in the data is a `DataError`
naming the file, line, field and the fix.
"""

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.data.config import DATA_SOURCES
from splade_peft.data.embedded import COLLECTION_NAME, build_embedded_collection, embedded_folder
from splade_peft.data.msmarco import load_msmarco_folder
from splade_peft.data.subsample import subsample
from splade_peft.errors import ConfigError, DataError, SpladePeftError

log = logging.getLogger(__name__)

QRELS_HEADER = ["query-id", "corpus-id", "score"]
BEIR_LAYOUT = (
    "data.path must be a BEIR folder: corpus.jsonl (_id, title, text), queries.<split>.jsonl or queries.jsonl "
    "(_id, text), qrels/<split>.tsv (query-id<TAB>corpus-id<TAB>score)"
)
OFFLINE_HINT = "for offline use set data.source=beir data.path=<folder>"

# (line, id, text): one corpus or query record, line 1-based in its file (row number for hub datasets).
Record = tuple[int, str, str]


@dataclass(frozen=True)
class Origins:
    """Where the corpus, queries and judgements come from, as named in error messages."""

    corpus: str
    queries: str
    qrels: str


@dataclass(frozen=True)
class Judgement:
    line: int
    query_id: str
    doc_id: str
    grade: int


@dataclass(frozen=True)
class Parts:
    """A collection's three inputs as they stream from their source, not yet validated."""

    origins: Origins
    documents: Iterable[Record]
    queries: Iterable[Record]
    judgements: Iterable[Judgement]


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class SourceRequest:
    """One split of a collection, as a dataset spec names it: what a registered data source loads."""

    split: str
    path: str | None
    name: str | None
    hub_id: str | None
    cache_dir: Path
    unknown_ids: str


def load_collection(
    source: str,
    split: str,
    *,
    path: str | None = None,
    name: str | None = None,
    hub_id: str | None = None,
    cache_dir: str | Path = ".cache",
    unknown_ids: str = "error",
) -> Collection:
    """Load one split of a collection from the `source` registered under that name; only the queries judged in
    that split are kept."""
    loader = DATA_SOURCES.get(source)
    return loader.implementation(SourceRequest(split, path, name, hub_id, Path(cache_dir), unknown_ids))


@DATA_SOURCES.register("beir")
def beir_source(request: SourceRequest) -> Collection:
    folder = required_folder(request.path)
    return load_beir(folder, request.split, request.name or folder.resolve().name, request.unknown_ids)


@DATA_SOURCES.register("embedded")
def embedded_source(request: SourceRequest) -> Collection:
    return load_embedded(request.split, request.cache_dir, request.unknown_ids)


@DATA_SOURCES.register("hub")
def hub_source(request: SourceRequest) -> Collection:
    return load_hub(required_hub_id(request.hub_id), request.split, request.name, request.cache_dir, request.unknown_ids)


@DATA_SOURCES.register("msmarco")
def msmarco_source(request: SourceRequest) -> Collection:
    return load_msmarco_folder(required_folder(request.path), request.split, request.name)


def assemble(name: str, split: str, parts: Parts, digest: Digest, unknown_ids: str) -> Collection:
    """Validate the streamed parts into a Collection. The readers feed `digest` as they stream, so it is read
    only after all three parts are consumed."""
    origins = parts.origins
    corpus = unique_texts(origins.corpus, parts.documents)
    if not corpus:
        raise DataError(origins.corpus, "the corpus has no documents", fix="write one JSON document per line")
    query_texts = unique_texts(origins.queries, non_empty_queries(origins.queries, parts.queries))
    qrels = resolve_judgements(origins, parts.judgements, query_texts, corpus, unknown_ids)
    if not qrels:
        raise DataError(origins.qrels, f"no judged queries for split '{split}'", fix="add judgements for this split")
    judged_queries = {query_id: text for query_id, text in query_texts.items() if query_id in qrels}
    return Collection(name, split, corpus, judged_queries, qrels, digest.hexdigest()[:16])


def unique_texts(origin: str, records: Iterable[Record]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line, record_id, text in records:
        if record_id in texts:
            raise DataError(origin, f"duplicate _id '{record_id}' (already used on an earlier line)", line, "_id",
                            fix="give every record its own _id")
        texts[record_id] = text
    return texts


def non_empty_queries(origin: str, queries: Iterable[Record]) -> Iterator[Record]:
    for line, query_id, text in queries:
        if not text.strip():
            raise DataError(origin, f"query '{query_id}' has an empty text", line, "text",
                            fix="write the query text or remove the line")
        yield line, query_id, text


def resolve_judgements(
    origins: Origins,
    judgements: Iterable[Judgement],
    queries: dict[str, str],
    corpus: dict[str, str],
    unknown_ids: str,
) -> dict[str, dict[str, int]]:
    """Group judgements by query; those naming an unknown query or document raise, or are dropped and counted."""
    qrels: dict[str, dict[str, int]] = {}
    dropped = 0
    for judgement in judgements:
        unknown = unknown_reference(origins, judgement, queries, corpus)
        if unknown is None:
            add_judgement(origins.qrels, qrels, judgement)
        elif unknown_ids == "drop":
            dropped += 1
        else:
            raise unknown
    if dropped:
        log.warning("%s: dropped %d judgement lines naming a query or document id that does not exist "
                    "(data.unknown_ids=drop)", origins.qrels, dropped)
    return qrels


def unknown_reference(origins: Origins, judgement: Judgement, queries: dict[str, str],
                      corpus: dict[str, str]) -> DataError | None:
    fix = "correct the id, or set data.unknown_ids=drop to skip such lines"
    if judgement.query_id not in queries:
        return DataError(origins.qrels, f"query id '{judgement.query_id}' is not in {origins.queries}",
                         judgement.line, "query-id", fix)
    if judgement.doc_id not in corpus:
        return DataError(origins.qrels, f"doc id '{judgement.doc_id}' is not in {origins.corpus}",
                         judgement.line, "corpus-id", fix)
    return None


def add_judgement(origin: str, qrels: dict[str, dict[str, int]], judgement: Judgement) -> None:
    grades = qrels.setdefault(judgement.query_id, {})
    earlier = grades.get(judgement.doc_id)
    if earlier is not None and earlier != judgement.grade:
        raise DataError(origin, f"pair ({judgement.query_id}, {judgement.doc_id}) judged {earlier} earlier and "
                        f"{judgement.grade} here", judgement.line, "score", fix="keep one grade per pair")
    grades[judgement.doc_id] = judgement.grade


def document_text(title: str, text: str) -> str:
    return f"{title}. {text}" if title else text


# --- BEIR folders -------------------------------------------------------------------------------------------


def required_folder(path: str | None) -> Path:
    if not path:
        raise DataError("data.path", "not set for data.source=beir", fix=f"set data.path; {BEIR_LAYOUT}")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(folder, "folder not found", fix=BEIR_LAYOUT)
    return folder


def load_beir(folder: Path, split: str, name: str, unknown_ids: str) -> Collection:
    files = beir_files(folder, split)
    digest = hashlib.sha256(f"split={split}\n".encode())
    documents = (
        (line, record_id, document_text(optional_string(files.corpus, line, record, "title"), text))
        for line, record, record_id, text in id_text_records(Path(files.corpus), digest)
    )
    queries = ((line, record_id, text) for line, _, record_id, text in id_text_records(Path(files.queries), digest))
    parts = Parts(files, documents, queries, qrels_judgements(Path(files.qrels), digest))
    return assemble(name, split, parts, digest, unknown_ids)


def beir_files(folder: Path, split: str) -> Origins:
    split_queries = folder / f"queries.{split}.jsonl"
    queries = split_queries if split_queries.is_file() else folder / "queries.jsonl"
    files = Origins(str(folder / "corpus.jsonl"), str(queries), str(folder / "qrels" / f"{split}.tsv"))
    for file in (files.corpus, files.queries):
        if not Path(file).is_file():
            raise DataError(file, "file not found", fix=BEIR_LAYOUT)
    if not Path(files.qrels).is_file():
        splits = sorted(tsv.stem for tsv in (folder / "qrels").glob("*.tsv")) or ["none"]
        raise DataError(files.qrels, f"no judgements for split '{split}' (splits here: {', '.join(splits)})",
                        fix=BEIR_LAYOUT)
    return files


def numbered_lines(file: Path, digest: Digest) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 file with their 1-based numbers, read as bytes so a bad byte names its line."""
    digest.update(f"file={file.name}\n".encode())
    with file.open("rb") as lines:
        for line, raw in enumerate(lines, start=1):
            digest.update(raw)
            text = decoded(file, line, raw)
            if text.strip():
                yield line, text


def decoded(file: Path, line: int, raw: bytes) -> str:
    try:
        # Editors on Windows may start the file with a byte-order mark.
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise DataError(file, f"bytes that are not UTF-8 at byte {error.start + 1} of the line", line,
                        fix="re-encode the file as UTF-8") from None


def json_records(file: Path, digest: Digest) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in numbered_lines(file, digest):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(file, f"invalid JSON ({error.msg}, column {error.colno})", line,
                            fix="write one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataError(file, f"a JSON {type(record).__name__}, not an object", line,
                            fix="write one JSON object per line")
        yield line, record


def id_text_records(file: Path, digest: Digest) -> Iterator[tuple[int, dict[str, Any], str, str]]:
    """(line, record, _id, text) for every JSON line; `_id` and `text` must be strings."""
    for line, record in json_records(file, digest):
        yield line, record, required_string(file, line, record, "_id"), required_string(file, line, record, "text")


def required_string(file: str | Path, line: int, record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        problem = "missing" if value is None else f"a JSON {type(value).__name__}, not a string"
        raise DataError(file, problem, line, field, fix=f"give every line a string '{field}'")
    return value


def optional_string(file: str | Path, line: int, record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise DataError(file, f"a JSON {type(value).__name__}, not a string", line, field,
                        fix=f"make '{field}' a string or leave it out")
    return value or ""


def qrels_judgements(file: Path, digest: Digest) -> Iterator[Judgement]:
    for line, text in numbered_lines(file, digest):
        columns = [column.strip() for column in text.rstrip("\r\n").split("\t")]
        if line == 1 and columns == QRELS_HEADER:
            continue
        if len(columns) != len(QRELS_HEADER):
            raise DataError(file, f"{len(columns)} tab-separated columns, expected 3", line,
                            fix="write query-id<TAB>corpus-id<TAB>score (header line optional)")
        yield Judgement(line, columns[0], columns[1], integer_grade(file, line, columns[2]))


def integer_grade(file: Path, line: int, score: str) -> int:
    try:
        return int(score)
    except ValueError:
        raise DataError(file, f"score '{score}' is not an integer", line, "score",
                        fix="write integer grades (0 = judged non-relevant)") from None


# --- the embedded collection --------------------------------------------------------------------------------


def load_embedded(split: str, cache_dir: Path, unknown_ids: str) -> Collection:
    folder = embedded_folder(cache_dir)
    if not folder.is_dir():
        build_embedded_collection(folder)
    return load_beir(folder, split, COLLECTION_NAME, unknown_ids)


# --- Hugging Face hub and ir_datasets (need a network; not exercised by the offline tests) -------------------


def required_hub_id(hub_id: str | None) -> str:
    if not hub_id:
        raise ConfigError("data.hub_id", "not set for data.source=hub",
                          "set data.hub_id=BeIR/<name> or irds:<ir_datasets id>; " + OFFLINE_HINT)
    return hub_id


@DATA_SOURCES.register("nanobeir")
def nanobeir_source(request: SourceRequest) -> Collection:
    return load_hub(required_hub_id(request.hub_id), request.split, request.name, request.cache_dir, request.unknown_ids,
                    layout=nanobeir_parts)


def load_hub(hub_id: str, split: str, name: str | None, cache_dir: Path, unknown_ids: str, layout=None) -> Collection:
    """A collection from the hub: BEIR's layout (BeIR/<name> and BeIR/<name>-qrels) unless `layout` reads another."""
    digest = hashlib.sha256(f"hub={hub_id}\nsplit={split}\n".encode())
    default_name = hub_id.removeprefix("irds:").replace("/", "-")
    try:
        if hub_id.startswith("irds:"):
            parts = irds_parts(hub_id, digest)
        else:
            parts = (layout or hub_parts)(hub_id, split, cache_dir, digest)
        return assemble(name or default_name, split, parts, digest, unknown_ids)
    except SpladePeftError:
        raise
    except Exception as error:
        # Hub and network failures come in many exception types; the user needs one line and the offline way.
        reason = (str(error).strip().splitlines() or [""])[0]
        message = f"could not load '{hub_id}' ({type(error).__name__}: {reason}) -- {OFFLINE_HINT}"
        raise SpladePeftError(message) from error


def hub_parts(hub_id: str, split: str, cache_dir: Path, digest: Digest) -> Parts:
    """BEIR's hub layout: `<id>` with corpus and queries configurations, graded judgements in `<id>-qrels`."""
    import datasets

    hub_cache = str(cache_dir / "hub")
    corpus = datasets.load_dataset(hub_id, "corpus", split="corpus", cache_dir=hub_cache)
    queries = datasets.load_dataset(hub_id, "queries", split="queries", cache_dir=hub_cache)
    qrels = datasets.load_dataset(f"{hub_id}-qrels", split=split, cache_dir=hub_cache)
    origins = Origins(f"{hub_id} (corpus)", f"{hub_id} (queries)", f"{hub_id}-qrels ({split})")
    return rows_as_parts(origins, corpus, queries, qrels, digest)


def nanobeir_parts(hub_id: str, split: str, cache_dir: Path, digest: Digest) -> Parts:
    """NanoBEIR's layout: one repository with corpus, queries and qrels configurations, each one split
    (`split`, "train" on the hub) and judgements without grades (every listed pair is relevant)."""
    import datasets

    hub_cache = str(cache_dir / "hub")
    corpus, queries, qrels = (datasets.load_dataset(hub_id, part, split=split, cache_dir=hub_cache)
                              for part in ("corpus", "queries", "qrels"))
    origins = Origins(f"{hub_id} (corpus)", f"{hub_id} (queries)", f"{hub_id} (qrels)")
    return rows_as_parts(origins, corpus, queries, qrels, digest)


def rows_as_parts(origins: Origins, corpus: Iterable[dict], queries: Iterable[dict], qrels: Iterable[dict],
                  digest: Digest) -> Parts:
    """BEIR's row schema (_id/title/text, query-id/corpus-id/score; a missing score is relevant) as Parts."""
    documents = ((row_number, str(row["_id"]), document_text(row.get("title") or "", row["text"]))
                 for row_number, row in hashed_rows(corpus, digest))
    query_records = ((row_number, str(row["_id"]), row["text"]) for row_number, row in hashed_rows(queries, digest))
    judgements = (Judgement(row_number, str(row["query-id"]), str(row["corpus-id"]), int(row.get("score", 1)))
                  for row_number, row in hashed_rows(qrels, digest))
    return Parts(origins, documents, query_records, judgements)


def hashed_rows(rows: Iterable[dict[str, Any]], digest: Digest) -> Iterator[tuple[int, dict[str, Any]]]:
    for row_number, row in enumerate(rows, start=1):
        digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
        yield row_number, row


def irds_parts(hub_id: str, digest: Digest) -> Parts:
    try:
        import ir_datasets
    except ImportError:
        raise SpladePeftError(f"data.hub_id={hub_id} needs ir_datasets, which is not installed -- "
                              f"pip install ir_datasets; {OFFLINE_HINT}") from None
    dataset_id = hub_id.removeprefix("irds:")
    dataset = ir_datasets.load(dataset_id)
    origins = Origins(f"{hub_id} (docs)", f"{hub_id} (queries)", f"{hub_id} (qrels)")
    documents = ((row, doc.doc_id, irds_document_text(doc)) for row, doc in hashed_tuples(dataset.docs_iter(), digest))
    queries = (
        (row, query.query_id, query.default_text()) for row, query in hashed_tuples(dataset.queries_iter(), digest)
    )
    judgements = (
        Judgement(row, qrel.query_id, qrel.doc_id, int(qrel.relevance))
        for row, qrel in hashed_tuples(dataset.qrels_iter(), digest)
    )
    return Parts(origins, documents, queries, judgements)


def irds_document_text(doc: Any) -> str:
    if hasattr(doc, "text"):
        return document_text(getattr(doc, "title", "") or "", doc.text)
    return doc.default_text()


def hashed_tuples(rows: Iterable[tuple], digest: Digest) -> Iterator[tuple[int, Any]]:
    for row_number, row in enumerate(rows, start=1):
        digest.update(repr(tuple(row)).encode() + b"\n")
        yield row_number, row


# The slice a spec asks for (max_queries, max_documents) is part of the dataset, not of the training
# randomness: one draw for every seed, so `-m seed=1,2,3` evaluates each seed on the same queries and the
# sweep report can pair them.
SLICE_SEED = 0


def load_data(spec, split: str, cache_dir: str | Path) -> Collection:
    """One split of a dataset spec (data.*, an eval.datasets or data.mixture.datasets entry), subsampled as
    the spec asks (max_queries, max_documents), the same slice whatever the job's seed; downloads and
    parsed copies go under `cache_dir`."""
    collection = load_collection(
        spec.source, split, path=spec.get("path"), name=spec.get("name"), hub_id=spec.get("hub_id"),
        cache_dir=cache_dir, unknown_ids=spec.get("unknown_ids", "error"),
    )
    collection = subsample(collection, spec.get("max_queries"), spec.get("max_documents"), SLICE_SEED)
    if spec.get("ignore_identical_ids"):
        collection = dataclasses.replace(collection, ignore_identical_ids=True)
    return collection


@dataclass(frozen=True)
class EvaluationCollections:
    """eval.datasets loaded: the collections by name, the suites they are averaged in ({suite: [names]}) and
    the text lengths an entry sets for itself ({name: (query_max_length, doc_max_length)}, None: the model's)."""

    collections: dict[str, Collection]
    suites: dict[str, list[str]]
    max_lengths: dict[str, tuple[int | None, int | None]]


def load_eval_collections(specs: Mapping, cache_dir: str | Path, local_copies: str | Path | None = None) -> EvaluationCollections:
    """Every eval.datasets entry; a hub entry whose key names a folder under `local_copies` (eval.local_copies:
    BEIR's downloads unpacked side by side) is read from that folder in BEIR layout instead."""
    loaded = EvaluationCollections({}, {}, {})
    for key, spec in specs.items():
        spec = local_copy(spec, key, local_copies)
        try:
            collection = load_data(spec, spec.split, cache_dir)
        except SpladePeftError as error:  # a suite lists many datasets: say which one could not be loaded
            offline = (f"for offline use put a BEIR-layout copy at {Path(local_copies) / key}" if local_copies else
                       f"for offline use set eval.local_copies=<folder holding {key}/> or "
                       f"eval.datasets.{key}.source=beir eval.datasets.{key}.path=<folder>")
            raise SpladePeftError(f"eval.datasets.{key}: {str(error).replace(OFFLINE_HINT, offline)}") from error
        loaded.collections[collection.name] = collection
        if spec.get("suite"):
            loaded.suites.setdefault(spec.suite, []).append(collection.name)
        loaded.max_lengths[collection.name] = (spec.get("query_max_length"), spec.get("doc_max_length"))
    return loaded


def local_copy(spec, key: str, local_copies: str | Path | None):
    folder = Path(local_copies) / key if local_copies else None
    if spec.get("source") != "hub" or folder is None or not folder.is_dir():
        return spec
    copy = OmegaConf.create(OmegaConf.to_container(spec, resolve=True))
    copy.source, copy.path = "beir", str(folder)
    return copy
