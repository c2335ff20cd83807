"""Teacher scores stay with their documents; missing pairs, foreign files and pickles are never silent."""

import json
import logging
import pickle

import pytest

from splade_peft.data.collection import Collection
from splade_peft.data.teachers import (
    check_same_dataset, ensemble, load_score_file, main, within_query_spread, write_score_file,
)
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
    combined = ensemble([first, second], "zscore_mean")
    assert set(combined["q"]) == {"a", "b"}  # c is not scored by every teacher: left to data.teacher.missing
    assert combined["q"]["a"] == pytest.approx((-1 - 1.2247449) / 2, rel=1e-6)
    assert combined["q"]["b"] == pytest.approx((1 + 1.2247449) / 2, rel=1e-6)
    assert ensemble([first, {"q": {"a": 3.0, "b": 5.0}}], "zscore_mean")["q"] == {"a": -1.0, "b": 1.0}
    assert ensemble([first, {"q": {"a": 3.0, "b": 5.0}}], "mean")["q"] == {"a": 2.0, "b": 4.0}


def spread_of(scores):
    return max(max(s.values()) - min(s.values()) for s in scores.values())


def test_aligned_ensemble_keeps_the_reference_teachers_scale():
    # the reference scores like a SPLADE student (margins of tens), the second teacher like BM25, 100x smaller
    reference = {"q1": {"a": 30.0, "b": 10.0, "c": 0.0}, "q2": {"a": 24.0, "b": 20.0, "c": 16.0}}
    second = {"q1": {"a": 0.3, "b": 0.2, "c": 0.0}, "q2": {"a": 0.2, "b": 0.1, "c": 0.25}}
    combined = ensemble([reference, second], "aligned", reference=0)
    zscores = ensemble([reference, second], "zscore_mean")
    assert within_query_spread(combined) == pytest.approx(within_query_spread(reference), rel=1e-9)
    assert spread_of(zscores) < 3 < 20 < spread_of(combined)  # z-scores teach margins of a few units only
    # one global factor per teacher, not one per query: q1, where the reference is sure, keeps wider margins
    assert spread_of({"q1": combined["q1"]}) > spread_of({"q2": combined["q2"]})
    assert combined["q1"]["a"] > combined["q1"]["b"] > combined["q1"]["c"]


def test_teacher_weights_and_a_single_teacher_left_raw():
    first, second = {"q": {"a": 1.0, "b": 3.0}}, {"q": {"a": 30.0, "b": 10.0}}
    assert ensemble([first], "aligned") is first
    assert ensemble([first, second], "mean", [3.0, 1.0])["q"] == {"a": 8.25, "b": 4.75}
    only_first = ensemble([first, second], "aligned", [1.0, 0.0], reference=1)
    assert only_first["q"]["b"] - only_first["q"]["a"] == pytest.approx(20.0)  # first's order, second's scale
    with pytest.raises(ConfigError, match="data.teacher.weights"):
        ensemble([first, second], "aligned", [1.0])
    with pytest.raises(ConfigError, match="data.teacher.weights"):
        ensemble([first, second], "aligned", [0.0, 0.0])


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
