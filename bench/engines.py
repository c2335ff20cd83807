"""`python -m bench.engines --out bench [--documents N]`: the sparse search engines side by side.

Lucene (`impact_search`, the pipeline's path), Seismic (conf/index/seismic.yaml's parameters) and exact
(`ExactImpactSearcher`) search the same quantised vectors of two corpora, in one process run:

- SciFact test (5,183 documents, 300 queries, qrels), encoded with the configured checkpoint (default
  splade-2l); the vectors are cached under paths.cache, so a second run skips the encoding;
- a synthetic corpus with SPLADE-like statistics (vocabulary 30,522, Zipfian term frequencies, 100-200
  non-zeros a document, 20-40 a query, integer impacts), of --documents documents. It has no qrels:
  quality is agreement with exact's run (overlap@10, recall of exact's top 1000).

Per engine: build seconds; queries per second over one batched search at k = 1000; per-query latency over
--latency-queries queries searched one at a time (Lucene: pyserini's in-process searcher in a child
process, since the pipeline's path starts a JVM per call); ratios against Lucene's q/s (without its JVM
start, which favours Lucene) and against exact's quality. Writes <out>/engines.json and <out>/engines.md.
`python -m bench` runs this section too (--engine-documents).
"""

import argparse
import gc
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from bench.config import project_config
from bench.results import machine
from bench.search import python_wrapper_runs
from splade_peft.index.impact import build_impact_index, write_vector_collection
from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.lucene import impact_search
from splade_peft.search.runs import Run

ENGINES = ("lucene", "seismic", "exact")
K = 1000
VOCABULARY = 30_522  # BERT's WordPiece vocabulary, SPLADE's output dimension
Vectors = Mapping[str, Mapping[str, int]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--documents", type=int, default=1_000_000, help="synthetic corpus size")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic queries")
    parser.add_argument("--latency-queries", type=int, default=200, help="queries searched one at a time per engine")
    parser.add_argument("--threads", type=int, default=2, help="index building and search threads of every engine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the project's config (the SciFact part)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results = {"command": "python -m bench.engines " + shlex.join(argv), "machine": machine(),
               **engines_section(args.documents, args.queries, args.latency_queries, args.threads, args.seed,
                                 args.overrides)}
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engines.json").write_text(json.dumps(results, indent=2) + "\n")
    summary = "\n".join(engines_markdown(results)) + "\n"
    (args.out / "engines.md").write_text(summary)
    print(summary)


def engines_section(documents: int, queries: int, latency_queries: int, threads: int, seed: int,
                    overrides: list[str]) -> dict:
    """{"engines": {...}} for both corpora: what `python -m bench` adds to its results too."""
    cfg = engine_config(overrides)
    seismic = dict(cfg.index.seismic)
    print("[bench engines] SciFact", flush=True)
    docs, topics, qrels = scifact_vectors(cfg)
    scifact = compare_engines(docs, topics, qrels, seismic, threads, latency_queries)
    del docs
    print(f"[bench engines] synthetic corpus of {documents} documents", flush=True)
    corpus = SyntheticCorpus(documents, seed)
    synthetic = compare_engines(corpus, corpus.queries(queries, seed + 1), None, seismic, threads, latency_queries)
    return {"engines": {"k": K, "threads": threads, "seismic_parameters": seismic, "scifact": scifact,
                        "synthetic": {**corpus.description(), "queries": queries, **synthetic}}}


def engine_config(overrides: list[str]):
    return project_config(["index=seismic", *overrides])


# --- the corpora ----------------------------------------------------------------------------------------------

def scifact_vectors(cfg) -> tuple[dict, dict, dict]:
    """(document vectors, query vectors, qrels) of the eval split, quantised as index=lucene quantises them;
    cached under paths.cache/bench_engines, keyed by the encoder's weights and the collection."""
    from splade_peft.data.sources import load_data
    from splade_peft.index.sharded import weights_fingerprint
    from splade_peft.model.backbones import load_backbone
    from splade_peft.model.encoder import SpladeEncoder
    from splade_peft.records import fingerprint, write_json_atomic

    test = load_data(cfg.data, cfg.data.eval_split, cfg.paths.cache)
    masked_lm, tokenizer = load_backbone(cfg.model, cfg.paths.cache)
    encoder = SpladeEncoder(masked_lm, cfg.encoder.pooling)
    key = fingerprint({"encoder": weights_fingerprint(encoder), "collection": test.fingerprint,
                       "quantization": cfg.index.quantization,
                       "max_lengths": [cfg.model.query_max_length, cfg.model.doc_max_length]})
    cached = Path(cfg.paths.cache) / "bench_engines" / f"{key}.json"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cached, {"documents": quantised(encoder, tokenizer, test.corpus, cfg.model.doc_max_length, cfg.index),
                                   "queries": quantised(encoder, tokenizer, test.queries, cfg.model.query_max_length, cfg.index)})
    vectors = json.loads(cached.read_text())
    return vectors["documents"], vectors["queries"], test.qrels


def quantised(encoder, tokenizer, texts: Mapping[str, str], max_length: int, index) -> dict:
    from splade_peft.index.encode import encode_texts
    from splade_peft.index.impact import quantize

    return {text_id: quantize(vector, index.quantization) for text_id, vector in
            encode_texts(encoder, tokenizer, texts, max_length, index.tokens_per_batch, index.max_batch_size)}


class SyntheticCorpus(Mapping):
    """Documents with SPLADE-like statistics, held as CSR arrays (1M documents: about 1 GB, where dicts would
    take 10) and handed out one `{term: impact}` dict at a time.

    Terms are drawn from a Zipf law over the vocabulary (exponent 1: a few terms in most documents, most
    in few); impacts are log-normal around 60, as x100-quantised SPLADE weights are, cut to [1, 300]."""

    def __init__(self, documents: int, seed: int, terms: tuple[int, int] = (100, 200)):
        rng = np.random.default_rng(seed)
        self.terms = terms
        self.names = np.array([f"w{rank}" for rank in range(VOCABULARY)], dtype=object)
        self.cdf = np.cumsum(1.0 / np.arange(1, VOCABULARY + 1))
        self.cdf /= self.cdf[-1]
        self.offsets, self.columns, self.impacts = self._rows(rng, documents, terms)

    def _rows(self, rng, count: int, terms: tuple[int, int]):
        rows = [self._row(rng, rng.integers(terms[0], terms[1] + 1)) for _ in range(count)]
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum([len(columns) for columns in rows], out=offsets[1:])
        columns = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, dtype=np.int32)
        impacts = np.clip(np.rint(rng.lognormal(np.log(60), 0.7, len(columns))), 1, 300).astype(np.int16)
        return offsets, columns, impacts

    def _row(self, rng, length: int) -> np.ndarray:
        """`length` distinct Zipf-drawn term ids (drawn with replacement until that many are distinct)."""
        drawn = np.unique(np.searchsorted(self.cdf, rng.random(length * 2)))
        while len(drawn) < length:
            drawn = np.unique(np.concatenate([drawn, np.searchsorted(self.cdf, rng.random(length))]))
        return rng.permutation(drawn)[:length]

    def queries(self, count: int, seed: int) -> dict[str, dict[str, int]]:
        """20-40 terms each, from the same Zipf law and impact distribution as the documents."""
        offsets, columns, impacts = self._rows(np.random.default_rng(seed), count, (20, 40))
        return {f"q{i}": self._vector(offsets, columns, impacts, i) for i in range(count)}

    def vector(self, row: int) -> dict[str, int]:
        return self._vector(self.offsets, self.columns, self.impacts, row)

    def _vector(self, offsets, columns, impacts, row: int) -> dict[str, int]:
        start, end = offsets[row], offsets[row + 1]
        return dict(zip(self.names[columns[start:end]], impacts[start:end].tolist()))

    def description(self) -> dict:
        lengths = np.diff(self.offsets)
        return {"documents": len(self), "vocabulary": VOCABULARY, "zipf_exponent": 1.0,
                "doc_nnz_mean": float(lengths.mean()) if len(self) else 0.0, "query_nnz": [20, 40]}

    def __getitem__(self, doc_id: str) -> dict[str, int]:
        return self.vector(int(doc_id[1:]))

    def __iter__(self) -> Iterator[str]:
        return (f"d{row}" for row in range(len(self)))

    def __len__(self) -> int:
        return len(self.offsets) - 1


# --- the comparison -------------------------------------------------------------------------------------------

def compare_engines(docs: Vectors, queries: Vectors, qrels: dict | None, seismic: dict, threads: int,
                    latency_queries: int) -> dict:
    """Each engine built, timed and scored in turn (one index in memory at a time); quality against qrels
    when there are any, else against exact's run."""
    sample = dict(list(queries.items())[:latency_queries])
    rows, runs = {}, {}
    with tempfile.TemporaryDirectory(prefix="splade-engines-") as scratch:
        for engine in ENGINES:
            print(f"[bench engines]   {engine}", flush=True)
            rows[engine], runs[engine] = ENGINE_BENCHES[engine](docs, queries, sample, seismic, threads, Path(scratch))
            gc.collect()
    for engine in ENGINES:
        rows[engine]["quality"] = quality(runs[engine], qrels, runs["exact"])
    add_ratios(rows, "ndcg@10" if qrels else "overlap@10")
    return {"documents": len(docs), "queries": len(queries), "latency_queries": len(sample), "engines": rows}


def bench_lucene(docs, queries, sample, seismic, threads, scratch: Path) -> tuple[dict, Run]:
    (_, build_s) = timed(lambda: (write_vector_collection(docs.items(), scratch / "vectors", threads),
                                  build_impact_index(scratch / "vectors", scratch / "index", threads)))
    jvm_start_s = timed(lambda: impact_search(scratch / "index", dict(list(queries.items())[:1]), 10, threads))[1]
    run, search_s = timed(lambda: impact_search(scratch / "index", queries, K, threads))
    wrapper = python_wrapper_runs(scratch / "index", sample, [K], threads, scratch)[str(K)]
    return {"build_s": build_s, "qps": len(queries) / max(search_s - jvm_start_s, 1e-9),
            "qps_with_jvm_start": len(queries) / search_s, "jvm_start_s": jvm_start_s,
            "latency": percentiles(wrapper["latencies_s"]), "latency_path": "pyserini LuceneImpactSearcher"}, run


def bench_seismic(docs, queries, sample, seismic, threads, scratch: Path) -> tuple[dict, Run]:
    from splade_peft.search.seismic import SeismicImpactSearcher

    searcher, build_s = timed(lambda: SeismicImpactSearcher(docs.items(), seismic, threads))
    return searched(lambda batch, k: searcher.search(batch, k, threads), build_s, queries, sample)


def bench_exact(docs, queries, sample, seismic, threads, scratch: Path) -> tuple[dict, Run]:
    searcher, build_s = timed(lambda: ExactImpactSearcher(docs.items()))
    return searched(searcher.search, build_s, queries, sample)


ENGINE_BENCHES: dict[str, Callable] = {"lucene": bench_lucene, "seismic": bench_seismic, "exact": bench_exact}


def searched(search: Callable[[Vectors, int], Run], build_s: float, queries: Vectors, sample: Vectors) -> tuple[dict, Run]:
    """An in-memory engine's batched q/s and its latency one query at a time."""
    run, search_s = timed(lambda: search(queries, K))
    latencies = [timed(lambda: search({qid: query}, K))[1] for qid, query in sample.items()]
    return {"build_s": build_s, "qps": len(queries) / search_s, "latency": percentiles(latencies)}, run


def quality(run: Run, qrels: dict | None, exact: Run) -> dict:
    if qrels:
        from splade_peft.evaluation.metrics import evaluate

        metrics = evaluate(qrels, run)
        return {"ndcg@10": metrics["ndcg@10"], "recall@1000": metrics["recall@1000"]}
    return {"overlap@10": mean_overlap(run, exact, 10), "recall_of_exact@1000": mean_overlap(run, exact, K)}


def mean_overlap(run: Run, exact: Run, k: int) -> float:
    """Mean over queries of |run's top k ∩ exact's top k| / |exact's top k| (queries exact finds nothing for left out)."""
    shares = [len({d for d, _ in run.get(qid, [])[:k]} & {d for d, _ in hits[:k]}) / len(hits[:k])
              for qid, hits in exact.items() if hits]
    return statistics.fmean(shares) if shares else float("nan")


def add_ratios(rows: dict, metric: str) -> None:
    for row in rows.values():
        row["qps_vs_lucene"] = row["qps"] / rows["lucene"]["qps"]
        row[f"{metric}_vs_exact"] = row["quality"][metric] / rows["exact"]["quality"][metric]


def percentiles(latencies: list[float]) -> dict:
    if len(latencies) < 2:
        return {"p50_ms": (latencies or [float("nan")])[0] * 1000, "p95_ms": float("nan")}
    return {"p50_ms": statistics.median(latencies) * 1000, "p95_ms": statistics.quantiles(latencies, n=20)[18] * 1000}


def timed(call):
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


# --- the report -----------------------------------------------------------------------------------------------

def engines_markdown(results: dict) -> list[str]:
    engines = results["engines"]
    synthetic = engines["synthetic"]
    lines = ["## Search engines", "",
             f"k = {engines['k']}, threads: {engines['threads']}; Seismic parameters {json.dumps(engines['seismic_parameters'])}. "
             "q/s: one batched search; Lucene's without its JVM start (with it in brackets). Latency: one query "
             "at a time (Lucene: pyserini's in-process searcher).", ""]
    lines += _table(f"SciFact test ({engines['scifact']['documents']} documents, {engines['scifact']['queries']} queries)",
                    engines["scifact"])
    lines += _table(f"Synthetic corpus: {synthetic['documents']} documents (size used; --documents), vocabulary "
                    f"{synthetic['vocabulary']}, {synthetic['doc_nnz_mean']:.0f} non-zeros a document, 20-40 a query, "
                    f"{synthetic['queries']} queries; quality is agreement with exact", synthetic)
    return lines


def _table(title: str, section: dict) -> list[str]:
    metrics = list(section["engines"]["exact"]["quality"])  # nDCG@10 and R@1000, or agreement with exact
    ratio = f"{metrics[0]}_vs_exact"
    lines = [f"### {title}", "", f"| engine | build s | q/s | q/s vs Lucene | p50 ms | p95 ms | {metrics[0]} | "
             f"{metrics[1]} | {metrics[0]} vs exact |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in section["engines"].items():
        qps = f"{row['qps']:.1f}" + (f" ({row['qps_with_jvm_start']:.1f})" if "qps_with_jvm_start" in row else "")
        lines.append(f"| {name} | {row['build_s']:.1f} | {qps} | {row['qps_vs_lucene']:.2f} | {row['latency']['p50_ms']:.1f} | "
                     f"{row['latency']['p95_ms']:.1f} | {row['quality'][metrics[0]]:.4f} | {row['quality'][metrics[1]]:.4f} | "
                     f"{row[ratio]:.4f} |")
    return lines + [""]


if __name__ == "__main__":
    main(sys.argv[1:])
