"""Scale benchmark: encode and index a synthetic corpus with the tiny model, report peak memory and throughput.

`python -m bench.scale [--documents 200000]` runs the project's own encode -> quantise -> write ->
Lucene-index path at half and at the full size, each in a fresh process (peak RSS is per process), and writes
`bench/scale.json`: per size the peak RSS of Python and of the Java indexer and documents per second, plus
the memory growth per 100k documents between the two sizes. Bounded (streaming) memory shows as a growth
near zero.
"""

import argparse
import contextlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
from omegaconf import OmegaConf

from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import build_impact_index, quantize, write_vector_collection
from splade_peft.model.backbones import load_backbone
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.records import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
WORDS_PER_DOCUMENT = (40, 120)


class SyntheticCorpus(Mapping):
    """Documents made on demand from their number, so the corpus itself takes no memory at any size."""

    def __init__(self, size: int, vocabulary: list[str]):
        self.size, self.vocabulary = size, vocabulary

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[str]:
        return (f"doc{i}" for i in range(self.size))

    def __getitem__(self, doc_id: str) -> str:
        rng = random.Random(doc_id)
        return " ".join(rng.choices(self.vocabulary, k=rng.randint(*WORDS_PER_DOCUMENT)))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildPeakRss(threading.Thread):
    """Samples the RSS of this process's children (the Java indexer). getrusage cannot: a child's ru_maxrss
    counts the parent's pages it held between fork and exec."""

    def __init__(self, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.interval_s, self.peak_mb, self.stopped = interval_s, 0.0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stopped.wait(self.interval_s):
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.peak_mb = max(self.peak_mb, child.memory_info().rss / 2**20)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.join()


def measure(documents: int, work_dir: Path) -> dict:
    """One size, in this process: encode + write the vector shards, then index them."""
    model_cfg = OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml")
    model_cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "model" / "splade_2l.yaml"), model_cfg)
    masked_lm, tokenizer = load_backbone(model_cfg, REPO / ".cache")
    encoder = SpladeEncoder(masked_lm, "max")
    vocabulary = [t for t in tokenizer.get_vocab() if t.isalpha()]
    corpus = SyntheticCorpus(documents, vocabulary)
    baseline = peak_rss_mb()

    started = time.perf_counter()
    vectors = ((doc_id, quantize(vector, 100)) for doc_id, vector in encode_texts(
        encoder, tokenizer, corpus, model_cfg.doc_max_length, tokens_per_batch=8192, max_batch_size=64))
    written = write_vector_collection(vectors, work_dir / "vectors", shards=2)
    encoded = time.perf_counter()
    with ChildPeakRss() as java:
        stats = build_impact_index(work_dir / "vectors", work_dir / "index", threads=2)
    indexed = time.perf_counter()
    return {
        "documents": documents, "indexed": stats.documents, "written": written,
        "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_model_load_mb": round(baseline, 1),
        "java_peak_rss_mb": round(java.peak_mb, 1),
        "encode_docs_per_s": round(documents / (encoded - started), 1),
        "index_docs_per_s": round(documents / (indexed - encoded), 1),
        "encode_s": round(encoded - started, 1), "index_s": round(indexed - encoded, 1),
    }


def measure_in_fresh_process(documents: int) -> dict:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--one-size", str(documents)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    if finished.returncode != 0:
        raise SystemExit(f"benchmark at {documents} documents failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "scale.json")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one_size:
        with tempfile.TemporaryDirectory(prefix="splade-scale-") as work_dir:
            print(json.dumps(measure(arguments.one_size, Path(work_dir))))
        return
    half, full = (measure_in_fresh_process(n) for n in (arguments.documents // 2, arguments.documents))
    per_100k = 100_000 / (full["documents"] - half["documents"])
    report = {
        "model": "tiny (conf/model/tiny.yaml)", "sizes": [half, full],
        "python_rss_growth_mb_per_100k_docs": round((full["peak_rss_mb"] - half["peak_rss_mb"]) * per_100k, 1),
        "java_rss_growth_mb_per_100k_docs": round((full["java_peak_rss_mb"] - half["java_peak_rss_mb"]) * per_100k, 1),
    }
    write_json_atomic(arguments.output, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
