"""Property: any corruption of a valid BEIR collection ends in the project's DataError naming the file
(and the line where there is one), never in another exception or a silently different collection."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splade_peft.data.sources import load_collection
from splade_peft.errors import DataError

pytestmark = pytest.mark.fault

CORPUS = [{"_id": f"d{i}", "title": f"Title {i}", "text": f"Document number {i} about topic {i % 3}."} for i in range(6)]
QUERIES = [{"_id": f"q{i}", "text": f"question {i}"} for i in range(4)]
QRELS = ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q1\td1\t2", "q1\td2\t0", "q2\td3\t1", "q3\td5\t1"]
FILES = {"corpus": "corpus.jsonl", "queries": "queries.jsonl", "qrels": "qrels/test.tsv"}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_files() -> dict[str, list[bytes]]:
    return {
        "corpus": [json.dumps(record).encode() for record in CORPUS],
        "queries": [json.dumps(record).encode() for record in QUERIES],
        "qrels": [line.encode() for line in QRELS],
    }


def load(folder: Path, files: dict[str, list[bytes]]):
    for part, lines in files.items():
        path = folder / FILES[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(line + b"\n" for line in lines))
    return load_collection("beir", "test", path=str(folder))


# Each strategy draws one corruption: (part, line number it breaks or None, the corrupted files).

@st.composite
def truncated_json(draw):
    files, part = valid_files(), draw(st.sampled_from(["corpus", "queries"]))
    index = draw(st.integers(0, len(files[part]) - 1))
    files[part][index] = files[part][index][: draw(st.integers(1, len(files[part][index]) - 1))]
    return part, index + 1, files


@st.composite
def invalid_utf8(draw):
    files, part = valid_files(), draw(st.sampled_from(list(FILES)))
    index = draw(st.integers(0, len(files[part]) - 1))
    line = files[part][index]
    at = draw(st.integers(0, len(line)))
    stray = draw(st.sampled_from([b"\x80", b"\xbf", b"\xc0", b"\xc1", b"\xf5", b"\xff", b"\xe9 "]))
    files[part][index] = line[:at] + stray + line[at:]
    return part, index + 1, files


@st.composite
def bad_field(draw):
    """A required field removed or given a value that is not a string."""
    part = draw(st.sampled_from(["corpus", "queries"]))
    records = [dict(r) for r in (CORPUS if part == "corpus" else QUERIES)]
    index, field = draw(st.integers(0, len(records) - 1)), draw(st.sampled_from(["_id", "text"]))
    value = draw(st.one_of(st.just("<absent>"), st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2),
                           st.dictionaries(st.text(max_size=2), st.integers(), max_size=1), st.booleans()))
    if value == "<absent>":
        del records[index][field]
    else:
        records[index][field] = value
    files = valid_files()
    files[part] = [json.dumps(record).encode() for record in records]
    return part, index + 1, files


@st.composite
def duplicate_id(draw):
    part = draw(st.sampled_from(["corpus", "queries"]))
    records = [dict(r) for r in (CORPUS if part == "corpus" else QUERIES)]
    first, second = draw(st.lists(st.integers(0, len(records) - 1), min_size=2, max_size=2, unique=True).map(sorted))
    records[second]["_id"] = records[first]["_id"]
    files = valid_files()
    files[part] = [json.dumps(record).encode() for record in records]
    return part, second + 1, files


@st.composite
def empty_query(draw):
    records = [dict(r) for r in QUERIES]
    index = draw(st.integers(0, len(records) - 1))
    records[index]["text"] = draw(st.text(alphabet=" \t\u00a0\u2003", max_size=4))
    files = valid_files()
    files["queries"] = [json.dumps(record).encode() for record in records]
    return "queries", index + 1, files


@st.composite
def bad_judgement(draw):
    """A qrels line with an unknown id, the wrong number of columns or a grade that is not an integer."""
    known = {"query": [q["_id"] for q in QUERIES], "doc": [d["_id"] for d in CORPUS]}
    unknown = st.text(alphabet="abcxyz0123456789", min_size=1, max_size=6)
    line = draw(st.one_of(
        st.tuples(unknown.filter(lambda i: i not in known["query"]), st.sampled_from(known["doc"]), st.just("1")),
        st.tuples(st.sampled_from(known["query"]), unknown.filter(lambda i: i not in known["doc"]), st.just("1")),
        st.lists(st.sampled_from(known["query"]), min_size=1, max_size=2).map(tuple),
        st.lists(st.just("1"), min_size=4, max_size=5).map(tuple),
        st.tuples(st.sampled_from(known["query"]), st.sampled_from(known["doc"]),
                  st.from_regex(r"\A([a-z]+|[0-9]+\.[0-9]+)\Z")),
    ))
    files = valid_files()
    index = draw(st.integers(1, len(files["qrels"])))
    files["qrels"].insert(index, "\t".join(line).encode())
    return "qrels", index + 1, files


@st.composite
def no_judged_queries(draw):
    files = valid_files()
    files["qrels"] = files["qrels"][: draw(st.integers(0, 1))]  # nothing, or the header alone
    return "qrels", None, files


CORRUPTIONS = st.one_of(
    truncated_json(), invalid_utf8(), bad_field(), duplicate_id(), empty_query(), bad_judgement(), no_judged_queries()
)


@SETTINGS
@given(corruption=CORRUPTIONS)
def test_every_corruption_is_a_data_error_naming_file_and_line(tmp_path_factory, corruption):
    part, line, files = corruption
    folder = tmp_path_factory.mktemp("beir")
    with pytest.raises(DataError) as raised:
        load(folder, files)
    assert raised.value.path.endswith(FILES[part])
    if line is not None:
        assert raised.value.line == line
    assert " -- " in str(raised.value), "every DataError says how to fix it"


@SETTINGS
@given(part=st.sampled_from(list(FILES)), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                          min_size=1, max_size=4))
def test_random_byte_damage_is_either_harmless_or_a_data_error(tmp_path_factory, part, flips):
    files = valid_files()
    blob = bytearray(b"\n".join(files[part]))
    for position, value in flips:
        blob[position % len(blob)] = value
    files[part] = bytes(blob).split(b"\n")
    try:
        collection = load(tmp_path_factory.mktemp("beir"), files)
    except DataError as error:
        # A damaged query id surfaces in the qrels that name it: any of the collection's files may be the one named.
        assert Path(error.path).name in {Path(name).name for name in FILES.values()}
        return
    # Loaded: then every judged query and document it kept is one the damaged files really contain.
    assert set(collection.qrels) == set(collection.queries)
    assert all(doc_id in collection.corpus for grades in collection.qrels.values() for doc_id in grades)


def test_the_uncorrupted_collection_loads(tmp_path):
    collection = load(tmp_path, valid_files())
    assert len(collection.corpus) == 6 and set(collection.queries) == {"q0", "q1", "q2", "q3"}
