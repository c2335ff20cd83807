"""Positive-aware false-negative filtering of mined candidates (NV-Retriever, Moreira et al. 2024).

A strong miner ranks unjudged relevant documents as high as the positive; taken as negatives they teach the
model to push relevant documents away. Each filter sets a ceiling from the query's positive score (or a fixed
value) and drops every candidate the miner scored above it, before the top `depth` are kept:

- abs (TopK-Abs):             ceiling = value
- margin_pos (TopK-MarginPos): ceiling = positive_score - value
- percpos (TopK-PercPos):      ceiling = positive_score * value   (the paper's recommendation, value 0.95)

Scores are the miner's own (BM25, SPLADE impacts, dense inner products), positives scored by the same miner.
percpos assumes non-negative scores (BM25 and SPLADE are); on a dense miner whose positive scores below zero,
a fraction of it lies above the positive, so prefer margin_pos there.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from splade_peft.errors import ConfigError

FILTERS = ("none", "abs", "margin_pos", "percpos")


@dataclass(frozen=True)
class NegativeFilter:
    method: str = "none"
    value: float | None = None

    def __post_init__(self):
        if self.method not in FILTERS:
            raise ConfigError("--filter", f"{self.method!r}", f"use one of {', '.join(FILTERS)}")
        if (self.method == "none") != (self.value is None):
            raise ConfigError("--filter-value", f"{self.value!r} with --filter {self.method}",
                              "give a value with every filter but none, and none without one")

    def ceiling(self, positive_score: float) -> float:
        """The highest score a candidate may have and stay a negative."""
        if self.method == "abs":
            return self.value
        if self.method == "margin_pos":
            return positive_score - self.value
        if self.method == "percpos":
            return positive_score * self.value
        return float("inf")

    def describe(self) -> dict:
        return {"method": self.method, "value": self.value}


def reference_positive_score(positive_scores: Sequence[float]) -> float:
    """With several positives the weakest sets the ceiling: a candidate scored like any judged-relevant
    document is as likely to be relevant itself."""
    return min(positive_scores)


def filtered_negatives(hits: Sequence[tuple[str, float]], positives: set[str], positive_score: float,
                       depth: int, negative_filter: NegativeFilter) -> tuple[tuple[str, ...], int]:
    """(the first `depth` non-positive hits under the ceiling, how many retrieved candidates the filter removed).

    `hits` is the miner's ranking, best first; the removed count covers every retrieved candidate, not only
    those that would have reached the top `depth`."""
    ceiling = negative_filter.ceiling(positive_score)
    candidates = [(doc_id, score) for doc_id, score in hits if doc_id not in positives]
    kept = [doc_id for doc_id, score in candidates if score <= ceiling]
    return tuple(kept[:depth]), len(candidates) - len(kept)


def removal_stats(removed: Mapping[str, int]) -> dict:
    """Per-query counts of removed candidates -> mean, max and total (0 everywhere for no query)."""
    counts = list(removed.values())
    total = sum(counts)
    return {"mean": total / len(counts) if counts else 0.0, "max": max(counts, default=0), "total": total}
