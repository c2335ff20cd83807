"""Search throughput and latency of the three searchers over the same impact index, and their agreement.

- exact: `ExactImpactSearcher` (scipy CSR, in memory), batched for q/s, one query at a time for latency;
- java_batch: `impact_search` (Anserini's SearchCollection in a subprocess, the pipeline's path): one
  JVM per call, so per-query latency is not observable; q/s is given with and without the JVM start;
- python_wrapper: pyserini's `LuceneImpactSearcher` in a child process (`pyserini_wrapper`).
"""

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import Run


def bench_search(index_dir: Path, corpus: Mapping[str, Mapping[str, int]], queries: Mapping[str, Mapping[str, int]],
                 ks: list[int], threads: int, workdir: Path) -> dict:
    started = time.perf_counter()
    exact = ExactImpactSearcher(corpus.items())
    results = {"queries": len(queries), "documents": len(corpus), "threads": threads,
               "exact_build_s": time.perf_counter() - started}
    wrapper = python_wrapper_runs(index_dir, queries, ks, threads, workdir)
    jvm_start_s = _timed(lambda: impact_search(index_dir, dict([next(iter(queries.items()))]), 10, threads))[1]
    for k in ks:
        exact_run, exact_s = _timed(lambda: exact.search(queries, k))
        java_run, java_s = _timed(lambda: impact_search(index_dir, queries, k, threads))
        python_run = {qid: canonical(hits) for qid, hits in wrapper[str(k)]["run"].items()}
        exact_latencies = [_timed(lambda: exact.search({qid: query}, k))[1] for qid, query in queries.items()]
        results[f"k={k}"] = {
            "exact": {"qps": len(queries) / exact_s, **_percentiles(exact_latencies)},
            "java_batch": {"qps": len(queries) / java_s, "qps_without_jvm_start": len(queries) / max(java_s - jvm_start_s, 1e-9),
                           "seconds": java_s, "jvm_start_s": jvm_start_s},
            "python_wrapper": {"qps": len(queries) / wrapper[str(k)]["batch_seconds"],
                               **_percentiles(wrapper[str(k)]["latencies_s"])},
            "agreement_with_exact": {"java_batch": agreement(exact_run, java_run, queries),
                                     "python_wrapper": agreement(exact_run, python_run, queries)},
        }
    return results


def python_wrapper_runs(index_dir: Path, queries, ks: list[int], threads: int, workdir: Path) -> dict:
    request, response = workdir / "wrapper-request.json", workdir / "wrapper-response.json"
    request.write_text(json.dumps({"index": str(index_dir), "queries": queries, "ks": ks, "threads": threads}))
    finished = subprocess.run([sys.executable, "-m", "bench.pyserini_wrapper", str(request), str(response)],
                              capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"pyserini wrapper exited with {finished.returncode}: {finished.stderr[-2000:]}")
    return json.loads(response.read_text())


def canonical(hits) -> list[tuple[str, float]]:
    """Score descending, then document id: Lucene's float scores of integer dot products rounded back."""
    return sorted(((docid, float(round(score))) for docid, score in hits), key=lambda hit: (-hit[1], hit[0]))


def agreement(reference: Run, candidate: Run, queries) -> dict:
    """Queries whose ranking is identical, and identical except which documents tied at the k-th score made it."""
    identical = up_to_cutoff_ties = 0
    for qid in queries:
        expected, got = canonical(reference.get(qid, [])), canonical(candidate.get(qid, []))
        identical += expected == got
        up_to_cutoff_ties += _same_but_cutoff_ties(expected, got)
    return {"queries": len(queries), "identical": identical, "identical_up_to_cutoff_ties": up_to_cutoff_ties}


def _same_but_cutoff_ties(expected: list, got: list) -> bool:
    if [score for _, score in expected] != [score for _, score in got]:
        return False
    if not expected:
        return True
    cutoff = expected[-1][1]
    return [hit for hit in expected if hit[1] > cutoff] == [hit for hit in got if hit[1] > cutoff]


def _percentiles(latencies: list[float]) -> dict:
    cuts = statistics.quantiles(latencies, n=20)
    return {"p50_ms": statistics.median(latencies) * 1000, "p95_ms": cuts[18] * 1000}


def _timed(call):
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started
