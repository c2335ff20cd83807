"""Positive-aware false-negative filters (NV-Retriever's TopK-Abs, TopK-MarginPos, TopK-PercPos) on hand-built scores."""

import pytest

from splade_peft.data.false_negatives import (NegativeFilter, filtered_negatives, reference_positive_score,
                                              removal_stats)
from splade_peft.errors import ConfigError

# The miner's ranking, best first: d0 is the positive, d1 scores almost as high (a likely false negative).
HITS = [("d1", 9.8), ("d0", 10.0), ("d2", 9.0), ("d3", 6.0), ("d4", 2.0)]


@pytest.mark.parametrize("method, value, kept, removed", [
    ("none", None, ("d1", "d2", "d3"), 0),
    ("abs", 8.0, ("d3", "d4"), 2),            # above 8: d1, d2
    ("margin_pos", 0.5, ("d2", "d3", "d4"), 1),  # above 10 - 0.5: d1
    ("percpos", 0.95, ("d2", "d3", "d4"), 1),  # above 9.5: d1
    ("percpos", 0.5, ("d4",), 3),             # above 5: d1, d2, d3
])
def test_each_filter_drops_candidates_above_its_ceiling(method, value, kept, removed):
    negatives, count = filtered_negatives(HITS, {"d0"}, 10.0, 3, NegativeFilter(method, value))
    assert negatives == kept and count == removed


def test_removed_counts_every_retrieved_candidate_not_only_the_kept_depth():
    negatives, count = filtered_negatives(HITS, {"d0"}, 10.0, 1, NegativeFilter("abs", 1.0))
    assert negatives == () and count == 4


def test_the_weakest_positive_sets_the_ceiling_and_stats_summarise_counts():
    assert reference_positive_score([3.0, 7.0]) == 3.0
    assert removal_stats({"q1": 0, "q2": 3, "q3": 1}) == {"mean": pytest.approx(4 / 3), "max": 3, "total": 4}
    assert removal_stats({}) == {"mean": 0.0, "max": 0, "total": 0}


def test_a_filter_needs_a_value_and_none_refuses_one():
    with pytest.raises(ConfigError, match="--filter-value"):
        NegativeFilter("percpos")
    with pytest.raises(ConfigError, match="--filter-value"):
        NegativeFilter("none", 0.9)
    with pytest.raises(ConfigError, match="topk"):
        NegativeFilter("topk")
