"""BM25 and the zero-shot checkpoint fused at inference: the baseline that tells what training adds beyond
combining the two systems a distillation teacher is made of.

Written here rather than taken from ranx: it is a dozen lines over the run files the job already has, and
ranx would bring numba into every install for one function."""

from splade_peft.search.runs import Run

Ranking = list[tuple[str, float]]


def min_max(hits: Ranking) -> dict[str, float]:
    """Scores mapped to [0, 1] within the query (all 1 when every score is equal)."""
    if not hits:
        return {}
    low, high = min(score for _, score in hits), max(score for _, score in hits)
    spread = high - low
    return {doc_id: (score - low) / spread if spread else 1.0 for doc_id, score in hits}


def fuse(first: Run, second: Run, first_weight: float, k: int) -> Run:
    """CombSUM of per-query min-max normalised scores, `first` weighted `first_weight` and `second` the rest; a
    document one run did not retrieve gets 0 from it. The top `k` of each query, best first (ties by id)."""
    fused: Run = {}
    for query_id in sorted(set(first) | set(second)):
        a, b = min_max(first.get(query_id, [])), min_max(second.get(query_id, []))
        scores = {doc_id: first_weight * a.get(doc_id, 0.0) + (1 - first_weight) * b.get(doc_id, 0.0)
                  for doc_id in a.keys() | b.keys()}
        fused[query_id] = sorted(scores.items(), key=lambda hit: (-hit[1], hit[0]))[:k]
    return fused
