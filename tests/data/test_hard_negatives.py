"""Hard-negative files: the real FlagEmbedding excerpt, mined files aligned with a corpus, the
sentence-transformers layout and triples, read lazily, with bad ids named and never silently kept."""

import gzip
import json
import logging

import pytest

from splade_peft.data.collection import Collection
from splade_peft.data.hard_negatives import (
    FlagEmbeddingSet, MappedLines, TriplesSet, flagembedding_candidates, st_hard_negative_candidates,
)
from splade_peft.data.teachers import load_score_file
from splade_peft.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA

MSMARCO_EXCERPT = SHARED_DATA / "samples" / "flagembedding" / "embedder_example_data_retrieval_msmarco.jsonl"


@pytest.fixture
def collection() -> Collection:
    corpus = {f"d{i}": f"text {i}" for i in range(6)}
    return Collection("toy", "train", corpus, {"q1": "first", "q2": "second"},
                      {"q1": {"d0": 1}, "q2": {"d1": 1}}, "0" * 16)


def mined_line(query_id, neg_ids, neg_scores=None):
    record = {"query_id": query_id, "query": "q", "pos_ids": ["d0"], "pos": ["text 0"], "neg_ids": neg_ids,
              "neg": ["x"] * len(neg_ids)}
    if neg_scores is not None:
        record.update(pos_scores=[5.0], neg_scores=neg_scores)
    return json.dumps(record)


def test_mapped_lines_skip_blank_lines_and_keep_file_line_numbers(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    lines = MappedLines(path)
    assert len(lines) == 2 and lines.json(1) == (3, {"a": 2})


@pytest.mark.skipif(not MSMARCO_EXCERPT.is_file(), reason="shared samples not present")
def test_the_real_flagembedding_excerpt_trains_with_sampled_negatives():
    dataset = FlagEmbeddingSet(MSMARCO_EXCERPT, negatives=4, seed=0, with_scores=False)
    item = dataset[0]
    record = json.loads(MSMARCO_EXCERPT.read_text().splitlines()[0])
    assert len(dataset) == 10 and item["query"] == record["query"]
    assert item["documents"][0] in record["pos"] and set(item["documents"][1:]) <= set(record["neg"])
    assert len(set(item["documents"][1:])) == 4


def test_flagembedding_scores_stay_with_their_texts(tmp_path):
    path = tmp_path / "scored.jsonl"
    path.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n0", "n1", "n2"],
                                "pos_scores": [9.0], "neg_scores": [0.0, 1.0, 2.0]}) + "\n")
    dataset = FlagEmbeddingSet(path, negatives=2, seed=1, with_scores=True)
    for epoch in range(4):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert item["teacher_scores"] == [9.0] + [float(text[1]) for text in item["documents"][1:]]


def test_mined_file_gives_pools_and_teacher_scores(tmp_path, collection):
    path = tmp_path / "mined.jsonl"
    path.write_text(mined_line("q1", ["d2", "d3"], [1.0, 2.0]) + "\n" + mined_line("other", ["d4"]) + "\n")
    candidates, teacher = flagembedding_candidates(path, collection, "error")
    assert candidates == {"q1": ("d2", "d3")}
    assert teacher == {"q1": {"d0": 5.0, "d2": 1.0, "d3": 2.0}}
    scored_only = tmp_path / "scored.jsonl"
    scored_only.write_text(mined_line("q1", ["d2", "d3"], [1.0, 2.0]) + "\n")
    assert load_score_file(scored_only) == teacher  # a mined file is also a teacher score file


def test_a_negative_id_not_in_the_corpus_is_named_or_dropped_and_counted(tmp_path, collection, caplog):
    path = tmp_path / "mined.jsonl"
    path.write_text(mined_line("q1", ["d2", "ghost"]) + "\n")
    with pytest.raises(DataError, match=r"line 1, field 'neg_ids': negative id 'ghost'"):
        flagembedding_candidates(path, collection, "error")
    with caplog.at_level(logging.WARNING):
        candidates, _ = flagembedding_candidates(path, collection, "drop")
    assert candidates == {"q1": ("d2",)} and "dropped 1 negative ids" in caplog.text


def test_a_mined_file_of_another_dataset_is_refused(tmp_path, collection):
    path = tmp_path / "mined.jsonl"
    path.write_text(mined_line("msmarco-7", ["d2"]) + "\n")
    with pytest.raises(DataError, match="another dataset"):
        flagembedding_candidates(path, collection, "error")


def test_a_plain_flagembedding_file_cannot_align_with_a_corpus(collection):
    with pytest.raises(DataError, match="field 'query_id'"):
        flagembedding_candidates(MSMARCO_EXCERPT, collection, "error")


def test_sentence_transformers_layout_interleaves_systems_without_positives(tmp_path):
    path = tmp_path / "msmarco-hard-negatives.jsonl.gz"
    with gzip.open(path, "wt") as stream:
        stream.write(json.dumps({"qid": 3, "pos": [10], "neg": {"bm25": [11, 10, 12], "dense": [13, 11, 14]}}) + "\n")
    assert st_hard_negative_candidates(path, None, depth=4) == {"3": ("11", "13", "12", "14")}
    assert st_hard_negative_candidates(path, ["dense"], depth=2) == {"3": ("13", "11")}
    with pytest.raises(ConfigError, match="data.hard_negatives.systems"):
        st_hard_negative_candidates(path, ["colbert"], depth=2)


def test_triples_are_one_negative_per_line_with_bad_lines_named(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("query\tpositive\tnegative\nbroken line\n")
    dataset = TriplesSet(path, negatives=1)
    assert dataset[0] == {"query": "query", "documents": ["positive", "negative"]}
    with pytest.raises(DataError, match="line 2"):
        dataset[1]
    with pytest.raises(ConfigError, match="data.negatives"):
        TriplesSet(path, negatives=4)
