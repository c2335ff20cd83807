"""Collections: the BEIR loader and its validation, the embedded stdlib collection, the hub adapters (faked)."""

import json
import logging
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest

from splade_peft.data.sources import load_collection, load_data
from splade_peft.data.embedded import build_embedded_collection, embedded_folder, split_of
from splade_peft.errors import ConfigError, DataError, SpladePeftError

from tests.helpers import SHARED_DATA

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": "", "text": "Dogs bark."},
    {"_id": "d3", "text": ""},
]
QUERIES = [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "what barks"}, {"_id": "q3", "text": "unjudged"}]
QRELS = ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q1\td2\t0", "q2\td2\t1"]


def json_lines(records: list[dict]) -> list[str]:
    return [json.dumps(record) for record in records]


def write_lines(file: Path, lines: list[str | bytes]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))


def write_beir(folder: Path, corpus=None, queries=None, qrels=None, split: str = "test") -> Path:
    write_lines(folder / "corpus.jsonl", json_lines(CORPUS) if corpus is None else corpus)
    write_lines(folder / "queries.jsonl", json_lines(QUERIES) if queries is None else queries)
    write_lines(folder / "qrels" / f"{split}.tsv", QRELS if qrels is None else qrels)
    return folder


def with_line(lines: list[str], number: int, content: str | bytes) -> list[str | bytes]:
    """`lines` with line `number` (1-based) replaced by `content`, or `content` appended after the last line."""
    return lines[: number - 1] + [content] + lines[number:]


# --- BEIR folders: what loads ---------------------------------------------------------------------------------


def test_a_sliced_collection_is_the_same_slice_for_every_seed(tmp_path):
    """Seeds of one grid point must be evaluated on the same queries for the report to pair them."""
    from omegaconf import OmegaConf

    spec = OmegaConf.create({"source": "beir", "path": str(write_beir(tmp_path / "tiny")), "max_queries": 1})
    slices = [load_data(spec, "test", tmp_path)
              for seed in range(1, 9)]
    assert all(len(s.queries) == 1 for s in slices) and all(s == slices[0] for s in slices)


def test_beir_collection_joins_titles_keeps_empty_documents_and_only_judged_queries(tmp_path):
    collection = load_collection("beir", "test", path=str(write_beir(tmp_path / "tiny")))
    assert collection.name == "tiny"
    assert collection.split == "test"
    assert collection.corpus == {"d1": "Cats. Cats purr.", "d2": "Dogs bark.", "d3": ""}
    assert collection.queries == {"q1": "what purrs", "q2": "what barks"}
    assert collection.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert len(collection.fingerprint) == 16 and int(collection.fingerprint, 16) >= 0


def test_qrels_header_is_optional(tmp_path):
    with_header = load_collection("beir", "test", path=str(write_beir(tmp_path / "a")))
    without_header = load_collection("beir", "test", path=str(write_beir(tmp_path / "b", qrels=QRELS[1:])))
    assert without_header.qrels == with_header.qrels


def test_split_queries_file_is_preferred(tmp_path):
    folder = write_beir(tmp_path / "c", split="train")
    write_lines(folder / "queries.train.jsonl", json_lines([{"_id": "q1", "text": "train purrs"},
                                                            {"_id": "q2", "text": "train barks"}]))
    collection = load_collection("beir", "train", path=str(folder), name="custom")
    assert collection.name == "custom"
    assert collection.queries == {"q1": "train purrs", "q2": "train barks"}


def test_fingerprint_follows_content_and_split_not_location(tmp_path):
    first = load_collection("beir", "test", path=str(write_beir(tmp_path / "a"))).fingerprint
    same = load_collection("beir", "test", path=str(write_beir(tmp_path / "b"))).fingerprint
    edited_corpus = json_lines(CORPUS[:2] + [{"_id": "d3", "text": "edited"}])
    edited = load_collection("beir", "test", path=str(write_beir(tmp_path / "c", corpus=edited_corpus))).fingerprint
    other_split = load_collection("beir", "dev", path=str(write_beir(tmp_path / "d", split="dev"))).fingerprint
    assert first == same
    assert len({first, edited, other_split}) == 3


def test_unknown_ids_can_be_dropped_and_counted(tmp_path, caplog):
    qrels = QRELS + ["q9\td1\t1", "q2\td9\t1"]
    with caplog.at_level(logging.WARNING, logger="splade_peft.data.sources"):
        collection = load_collection("beir", "test", path=str(write_beir(tmp_path, qrels=qrels)), unknown_ids="drop")
    assert collection.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert "dropped 2 judgement lines" in caplog.text


# --- BEIR folders: what is refused ----------------------------------------------------------------------------

BAD_LINES = {
    "corpus invalid JSON": ("corpus.jsonl", 2, '{"_id": "d2", "text": ', None),
    "corpus not an object": ("corpus.jsonl", 2, '["d2", "Dogs bark."]', None),
    "corpus missing _id": ("corpus.jsonl", 2, '{"text": "Dogs bark."}', "_id"),
    "corpus number _id": ("corpus.jsonl", 2, '{"_id": 2, "text": "Dogs bark."}', "_id"),
    "corpus missing text": ("corpus.jsonl", 3, '{"_id": "d3"}', "text"),
    "corpus list text": ("corpus.jsonl", 3, '{"_id": "d3", "text": ["x"]}', "text"),
    "corpus number title": ("corpus.jsonl", 1, '{"_id": "d1", "title": 1, "text": "Cats purr."}', "title"),
    "corpus duplicate _id": ("corpus.jsonl", 3, '{"_id": "d1", "text": "again"}', "_id"),
    "corpus not UTF-8": ("corpus.jsonl", 2, b'{"_id": "d2", "text": "caf\xe9"}', None),
    "queries invalid JSON": ("queries.jsonl", 1, "{'_id': 'q1'}", None),
    "queries missing text": ("queries.jsonl", 2, '{"_id": "q2"}', "text"),
    "queries empty text": ("queries.jsonl", 2, '{"_id": "q2", "text": "  "}', "text"),
    "queries duplicate _id": ("queries.jsonl", 3, '{"_id": "q1", "text": "again"}', "_id"),
    "queries not UTF-8": ("queries.jsonl", 3, b'{"_id": "q3", "text": "\xff"}', None),
    "qrels two columns": ("test.tsv", 3, "q1\td2", None),
    "qrels space separated": ("test.tsv", 3, "q1 d2 0", None),
    "qrels fractional score": ("test.tsv", 3, "q1\td2\t0.5", "score"),
    "qrels unknown query": ("test.tsv", 4, "q9\td2\t1", "query-id"),
    "qrels unknown document": ("test.tsv", 4, "q2\td9\t1", "corpus-id"),
    "qrels conflicting grades": ("test.tsv", 5, "q1\td1\t1", "score"),
    "qrels not UTF-8": ("test.tsv", 2, b"q1\td\xc3\t2", None),
}


@pytest.mark.parametrize(("file", "line", "content", "field"), BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_line_names_file_line_and_field(tmp_path, file, line, content, field):
    parts = {"corpus.jsonl": json_lines(CORPUS), "queries.jsonl": json_lines(QUERIES), "test.tsv": QRELS}
    parts[file] = with_line(parts[file], line, content)
    folder = write_beir(tmp_path, parts["corpus.jsonl"], parts["queries.jsonl"], parts["test.tsv"])
    with pytest.raises(DataError) as raised:
        load_collection("beir", "test", path=str(folder))
    message = str(raised.value)
    assert f"{file}, line {line}" in message
    assert (raised.value.field, raised.value.line) == (field, line)
    assert " -- " in message, "every DataError says how to fix it"


def test_unknown_id_is_named(tmp_path):
    folder = write_beir(tmp_path, qrels=QRELS + ["q7\td1\t1"])
    with pytest.raises(DataError, match="query id 'q7' is not in .*queries.jsonl"):
        load_collection("beir", "test", path=str(folder))


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file_names_it_and_the_layout(tmp_path, missing):
    folder = write_beir(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(DataError, match=f"{Path(missing).name}: .*corpus.jsonl \\(_id, title, text\\)"):
        load_collection("beir", "test", path=str(folder))


def test_missing_split_lists_the_splits_there(tmp_path):
    with pytest.raises(DataError, match=r"dev.tsv: no judgements for split 'dev' \(splits here: test\)"):
        load_collection("beir", "dev", path=str(write_beir(tmp_path)))


def test_missing_folder_or_path(tmp_path):
    with pytest.raises(DataError, match="nowhere: folder not found -- data.path must be a BEIR folder"):
        load_collection("beir", "test", path=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="data.path: not set"):
        load_collection("beir", "test")


def test_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="corpus.jsonl: the corpus has no documents"):
        load_collection("beir", "test", path=str(write_beir(tmp_path, corpus=["", "  "])))


@pytest.mark.parametrize(("qrels", "unknown_ids"), [(QRELS[:1], "error"), (QRELS[:1] + ["q9\td1\t1"], "drop")])
def test_split_without_judged_queries(tmp_path, qrels, unknown_ids):
    folder = write_beir(tmp_path, qrels=qrels)
    with pytest.raises(DataError, match="test.tsv: no judged queries for split 'test'"):
        load_collection("beir", "test", path=str(folder), unknown_ids=unknown_ids)


@pytest.mark.parametrize(("arguments", "key"), [
    ({"source": "csv"}, "data.source"),
    ({"source": "hub"}, "data.hub_id"),
])
def test_bad_settings_are_config_errors(arguments, key):
    with pytest.raises(ConfigError) as raised:
        load_collection(split="test", **arguments)
    assert raised.value.key == key


def test_a_bad_unknown_ids_policy_is_refused_by_the_config():
    from splade_peft.config import validate
    from tests.helpers import composed

    with pytest.raises(ConfigError, match="config key 'data.unknown_ids': 'ignore' is not allowed"):
        validate(composed("data.unknown_ids=ignore"))


def test_unknown_source_lists_the_sources():
    with pytest.raises(ConfigError, match="use one of beir, embedded, hub"):
        load_collection("csv", "test")


# --- the embedded stdlib collection ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    load_collection("embedded", "test", cache_dir=cache)
    return cache


@pytest.fixture(scope="module")
def embedded_splits(embedded_cache):
    return {split: load_collection("embedded", split, cache_dir=embedded_cache) for split in ("train", "dev", "test")}


def test_embedded_is_built_once_in_place_with_no_leftovers(embedded_cache):
    folder = embedded_folder(embedded_cache)
    assert folder.name == f"stdlib-docstrings-py{sys.version_info.major}{sys.version_info.minor}"
    assert list(folder.parent.iterdir()) == [folder]
    assert sorted(path.name for path in folder.rglob("*")) == [
        "README.md", "corpus.jsonl", "dev.tsv", "qrels", "queries.jsonl", "test.tsv", "train.tsv"]


def test_embedded_build_is_deterministic(embedded_cache, embedded_splits, tmp_path):
    first = embedded_folder(embedded_cache)
    second = build_embedded_collection(tmp_path / "again")
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    assert all((first / file).read_bytes() == (second / file).read_bytes() for file in files)
    again = load_collection("beir", "test", path=str(second), name="stdlib-docstrings")
    assert again == embedded_splits["test"]


def test_embedded_sizes(embedded_splits):
    sizes = {split: len(collection.queries) for split, collection in embedded_splits.items()}
    assert 3000 <= len(embedded_splits["test"].corpus) <= 6000
    assert sizes["test"] >= 250 and sizes["dev"] >= 150 and sizes["train"] >= 800, sizes


def test_embedded_splits_share_the_corpus_but_no_module(embedded_splits):
    modules = {split: {top_module(qid) for qid in c.queries} for split, c in embedded_splits.items()}
    assert embedded_splits["train"].corpus == embedded_splits["dev"].corpus == embedded_splits["test"].corpus
    assert not modules["train"] & modules["dev"] and not modules["train"] & modules["test"]
    assert not modules["dev"] & modules["test"]
    assert all(split_of(module) == split for split, names in modules.items() for module in names)


def test_embedded_pairs_are_known_items_without_the_query_in_the_document(embedded_splits):
    for collection in embedded_splits.values():
        for query_id, judged in collection.qrels.items():
            (doc_id, grade), = judged.items()
            assert (doc_id, grade) == ("d:" + query_id.removeprefix("q:"), 1)
            assert query_id in collection.queries and doc_id in collection.corpus
            assert collection.queries[query_id] not in collection.corpus[doc_id]


def top_module(query_id: str) -> str:
    return query_id.removeprefix("q:").split(".", 1)[0]


# --- hub and ir_datasets, with fake modules (no network here) --------------------------------------------------


def fake_datasets(tables: dict[str, list[dict]]) -> types.SimpleNamespace:
    def load_dataset(hub_id, config=None, *, split, cache_dir):
        return tables[f"{hub_id}/{config or split}"]

    return types.SimpleNamespace(load_dataset=load_dataset)


def test_hub_rows_become_a_collection(monkeypatch):
    tables = {
        "BeIR/tiny/corpus": [{"_id": "d1", "title": "Cats", "text": "Cats purr."},
                             {"_id": "d2", "title": "", "text": "x"}],
        "BeIR/tiny/queries": [{"_id": "1", "text": "what purrs"}, {"_id": "2", "text": "other split"}],
        # Some hub qrels tables store ids as integers.
        "BeIR/tiny-qrels/test": [{"query-id": 1, "corpus-id": "d1", "score": 1}],
    }
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(tables))
    collection = load_collection("hub", "test", hub_id="BeIR/tiny")
    assert collection.name == "BeIR-tiny"
    assert collection.corpus == {"d1": "Cats. Cats purr.", "d2": "x"}
    assert (collection.queries, collection.qrels) == ({"1": "what purrs"}, {"1": {"d1": 1}})


def test_hub_failure_is_one_line_with_the_offline_way(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'BeIR/tiny' on the Hub\nmore detail")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=unreachable))
    with pytest.raises(SpladePeftError) as raised:
        load_collection("hub", "test", hub_id="BeIR/tiny")
    message = str(raised.value)
    assert "\n" not in message and "'BeIR/tiny'" in message and "data.source=beir data.path=<folder>" in message


def test_ir_datasets_ids_are_read(monkeypatch):
    Doc = namedtuple("Doc", "doc_id title text")
    Query = namedtuple("Query", "query_id text")
    Qrel = namedtuple("Qrel", "query_id doc_id relevance iteration")
    Query.default_text = lambda query: query.text
    dataset = types.SimpleNamespace(
        docs_iter=lambda: iter([Doc("d1", "Cats", "Cats purr.")]),
        queries_iter=lambda: iter([Query("q1", "what purrs")]),
        qrels_iter=lambda: iter([Qrel("q1", "d1", 1, "0")]),
    )
    monkeypatch.setitem(sys.modules, "ir_datasets", types.SimpleNamespace(load={"beir/tiny/test": dataset}.get))
    collection = load_collection("hub", "test", hub_id="irds:beir/tiny/test")
    assert (collection.corpus, collection.qrels) == ({"d1": "Cats. Cats purr."}, {"q1": {"d1": 1}})


def test_missing_ir_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(SpladePeftError, match="pip install ir_datasets"):
        load_collection("hub", "test", hub_id="irds:beir/scifact/test")


# --- the real collections in ../shared/data --------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize(("split", "queries", "judgements"), [("test", 300, 339), ("train", 809, 919)])
def test_scifact_from_shared_data(split, queries, judgements):
    folder = SHARED_DATA / "scifact"
    if not folder.is_dir():
        pytest.skip(f"../shared/data/scifact not found: {folder.resolve()} does not exist")
    collection = load_collection("beir", split, path=str(folder))
    assert (collection.name, len(collection.corpus), len(collection.queries)) == ("scifact", 5183, queries)
    assert sum(len(judged) for judged in collection.qrels.values()) == judgements
