"""Teacher scores stay with their documents; missing pairs, foreign files and pickles are never silent."""

import json
import logging
import pickle

import pytest

from splade_peft.data.collection import Collection
from splade_peft.data.teachers import check_same_dataset, ensemble, load_score_file, main, write_score_file
from splade_peft.data.pairs import TrainingPair, TrainingSet, teacher_scored_pairs
from splade_peft.errors import ConfigError, DataError

SCORES = {"q1": {"d1": 9.0, "d2": 1.0, "d3": 2.0, "d4": 3.0, "d5": 4.0}, "q2": {"d6": 5.0, "d7": 0.5, "d8": 0.25}}


@pytest.fixture
def collection() -> Collection:
    corpus = {f"d{i}": f"d{i}" for i in range(1, 9)}  # each text is its id, so an item names its documents
    return Collection("toy", "train", corpus, {"q1": "first", "q2": "second"},
                      {"q1": {"d1": 1}, "q2": {"d6": 1}}, "0" * 16)


def test_each_score_stays_with_its_document_whatever_the_candidate_order(collection):
    pairs = [TrainingPair("q1", "d1", ("d5", "d3", "d2", "d4")), TrainingPair("q2", "d6", ("d8", "d7"))]
    dataset = TrainingSet(collection, pairs, negatives=2, seed=3, teacher=SCORES)
    for epoch in range(5):
        dataset.set_epoch(epoch)
        for index, pair in enumerate(pairs):
            item = dataset[index]
            assert item["documents"][0] == pair.positive_id
            assert item["teacher_scores"] == [SCORES[pair.query_id][doc_id] for doc_id in item["documents"]]


def test_teacher_rank_sampling_prefers_the_teachers_top_negatives(collection):
    pairs = [TrainingPair("q1", "d1", ("d2", "d3", "d4", "d5"))]
    dataset = TrainingSet(collection, pairs, negatives=1, seed=0, teacher=SCORES, sampling="teacher_rank")
    counts = {doc_id: 0 for doc_id in pairs[0].candidates}
    for epoch in range(400):
        dataset.set_epoch(epoch)
        counts[dataset[0]["documents"][1]] += 1
    # weights 1/rank over d5 (teacher 4.0), d4, d3, d2 (1.0): expected shares 48%, 24%, 16%, 12%
    assert counts["d5"] > counts["d4"] > counts["d2"] and counts["d5"] > 150


def test_a_missing_pair_is_an_error_naming_query_and_document():
    pairs = [TrainingPair("q1", "d1", ("d2", "d9"))]
    with pytest.raises(DataError, match=r"query 'q1', document 'd9'.*data.teacher.missing=skip"):
        teacher_scored_pairs(pairs, SCORES, 1, "error", "scores.json")


def test_skip_policy_counts_and_logs_what_it_drops(caplog):
    pairs = [TrainingPair("q1", "d1", ("d2", "d9")), TrainingPair("q2", "d99", ("d7", "d8"))]
    with caplog.at_level(logging.WARNING):
        kept = teacher_scored_pairs(pairs, SCORES, 1, "skip", "scores.json")
    assert kept == [TrainingPair("q1", "d1", ("d2",))]
    assert "dropped 1 unscored negatives and 1 of 2 training pairs" in caplog.text


def test_a_teacher_file_for_another_dataset_is_refused():
    with pytest.raises(DataError, match="another dataset"):
        check_same_dataset({"msmarco-1": {"p": 1.0}}, ["q1", "q2"], "ce-scores.json")


def test_ensemble_is_the_mean_of_per_query_z_scores():
    first = {"q": {"a": 1.0, "b": 3.0}}                 # z-scores -1, +1
    second = {"q": {"a": 10.0, "b": 30.0, "c": 20.0}}   # mean 20, std 8.165: z-scores -1.2247, +1.2247, 0
    combined = ensemble([first, second])
    assert set(combined["q"]) == {"a", "b"}  # c is not scored by every teacher: left to data.teacher.missing
    assert combined["q"]["a"] == pytest.approx((-1 - 1.2247449) / 2, rel=1e-6)
    assert combined["q"]["b"] == pytest.approx((1 + 1.2247449) / 2, rel=1e-6)
    assert ensemble([first, {"q": {"a": 3.0, "b": 5.0}}], "mean")["q"] == {"a": 2.0, "b": 4.0}


def test_pickles_need_the_opt_in_and_convert_to_parquet(tmp_path):
    source = tmp_path / "ce-scores.pkl"
    source.write_bytes(pickle.dumps({1: {7: 2.5, 8: -1}}))  # the MS MARCO file keys ints
    with pytest.raises(ConfigError, match="data.teacher.allow_pickle"):
        load_score_file(source)
    with pytest.warns(UserWarning, match="unpickling"):
        assert load_score_file(source, allow_pickle=True) == {"1": {"7": 2.5, "8": -1.0}}
    with pytest.warns(UserWarning):
        main([str(source), str(tmp_path / "scores.parquet"), "--allow-pickle"])
    assert load_score_file(tmp_path / "scores.parquet") == {"1": {"7": 2.5, "8": -1.0}}


def test_json_round_trip_and_non_finite_scores_named(tmp_path):
    write_score_file(SCORES, tmp_path / "scores.json")
    assert load_score_file(tmp_path / "scores.json") == SCORES
    (tmp_path / "bad.json").write_text(json.dumps({"q1": {"d1": "high"}}))
    with pytest.raises(DataError, match=r"field 'q1/d1'.*not a finite number"):
        load_score_file(tmp_path / "bad.json")
