"""`python -m bench [--texts N ...] [hydra overrides]`: every stage measured in one process run.

Writes `<out>/results.json` and `<out>/summary.md` and prints the summary. Data and checkpoint come
from the project's config (default: SciFact from ../shared/data and the splade-2l checkpoint).
"""

import argparse
import resource
import shlex
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from bench.encoding import bench_encoding
from bench.config import project_config
from bench.engines import engines_markdown, engines_section
from bench.indexing import bench_indexing, replicated_corpus
from splade_peft.memory import process_peak_rss_mb
from bench.results import machine, write_report
from bench.search import bench_search
from bench.suite import suite_markdown, suite_section
from bench.training import bench_training
from splade_peft.data.collection import Collection
from splade_peft.data.sources import load_data
from splade_peft.data.pairs import TrainingCollator, TrainingSet, random_candidates, training_pairs
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import quantize
from splade_peft.model.backbones import load_backbone
from splade_peft.model.encoder import SpladeEncoder

ADAPTERS = ("lora", "dora", "full")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads, Anserini threads and shards")
    parser.add_argument("--texts", type=int, default=24, help="documents encoded by each of the three encoders")
    parser.add_argument("--rounds", type=int, default=2, help="passes per encoder and per training loop; the best one counts")
    parser.add_argument("--file-texts", type=int, default=256,
                        help="documents encoded into vector files by the pipeline and by the per-document reference")
    parser.add_argument("--index-source-texts", type=int, default=64, help="documents encoded for the index")
    parser.add_argument("--index-documents", type=int, default=4000, help="index size (encoded texts, replicated)")
    parser.add_argument("--train-steps", type=int, default=12)
    parser.add_argument("--train-warmup", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=4, help="queries per training batch")
    parser.add_argument("--engine-documents", type=int, default=1_000_000,
                        help="synthetic corpus size of the search engines section (bench/engines.py)")
    parser.add_argument("--engine-queries", type=int, default=1000, help="synthetic queries of that section")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the project's config, e.g. model=tiny")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    cfg = project_config(args.overrides)
    test = load_data(cfg.data, cfg.data.eval_split, cfg.paths.cache)
    masked_lm, tokenizer = load_backbone(cfg.model, cfg.paths.cache)
    results = {"command": "python -m bench " + shlex.join(argv), "machine": machine(),
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
               "model": cfg.model.name, "data": cfg.data.name}
    texts = dict(islice(sorted(test.corpus.items()), args.texts))
    print(f"[bench] encoding {len(texts)} documents x 3 encoders x {args.rounds} rounds", flush=True)
    results["encoding"] = bench_encoding(masked_lm, tokenizer, Path(masked_lm.name_or_path), texts,
                                         cfg.model.doc_max_length, args.rounds,
                                         dict(islice(sorted(test.corpus.items()), args.file_texts)), cfg.index)
    print("[bench] training", flush=True)
    results["training"] = bench_training(masked_lm, training_batches(cfg, tokenizer, args.train_batch, args.train_steps),
                                         {name: adapter_config(args.overrides, name) for name in ADAPTERS},
                                         cfg.loss, cfg.optim, args.train_warmup, args.rounds)
    print("[bench] indexing and search", flush=True)
    encoder = SpladeEncoder(masked_lm, cfg.encoder.pooling)
    source = dict(islice(sorted(test.corpus.items()), args.index_source_texts))
    vectors = quantised(encoder, tokenizer, source, cfg.model.doc_max_length, cfg.index.quantization)
    queries = quantised(encoder, tokenizer, test.queries, cfg.model.query_max_length, cfg.index.quantization)
    corpus = replicated_corpus(vectors, args.index_documents, drop=0.2, seed=cfg.seed)
    with tempfile.TemporaryDirectory(prefix="splade-bench-") as scratch:
        layouts = [(1, 1), (1, args.threads), (args.threads, 1), (args.threads, args.threads)]
        results["indexing"] = bench_indexing(corpus, Path(scratch), sorted(set(layouts)))
        index_dir = Path(scratch) / f"t{args.threads}-s{args.threads}" / "index"
        results["search"] = {"ks": [10, 1000], **bench_search(index_dir, corpus, queries, [10, 1000], args.threads, Path(scratch))}
    print("[bench] search engines", flush=True)
    results.update(engines_section(args.engine_documents, args.engine_queries, latency_queries=200,
                                   threads=args.threads, seed=cfg.seed, overrides=args.overrides))
    print("[bench] one local-suite evaluation job per engine", flush=True)
    results.update(suite_section(cfg.paths.checkpoints, args.overrides))
    results["peak_rss_mb"] = process_peak_rss_mb()
    results["seconds"] = time.perf_counter() - started
    # On a shared machine the wall time mostly measures the other processes; CPU time does not.
    results["cpu_seconds"] = sum(getattr(resource.getrusage(who), field) for who in
                                 (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))
    print(write_report(results, args.out, sections={"engines": engines_markdown, "suite": suite_markdown}))


def quantised(encoder, tokenizer, texts, max_length: int, factor: float) -> dict:
    return {text_id: quantize(vector, factor) for text_id, vector in encode_texts(encoder, tokenizer, texts, max_length)}


def training_batches(cfg, tokenizer, batch_size: int, steps: int) -> list[dict]:
    train: Collection = load_data(cfg.data, cfg.data.train_split, cfg.paths.cache)
    pairs = training_pairs(train, random_candidates(train, cfg.data.negatives_depth, cfg.seed), cfg.data.negatives)
    loader = DataLoader(TrainingSet(train, pairs, cfg.data.negatives, cfg.seed), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(cfg.seed), drop_last=True,
                        collate_fn=TrainingCollator(tokenizer, cfg.model.query_max_length, cfg.model.doc_max_length))
    return list(islice(loader, steps))


def adapter_config(overrides: list[str], adapter: str) -> dict:
    return OmegaConf.to_container(project_config([*overrides, f"lora={adapter}"]).lora)


if __name__ == "__main__":
    main(sys.argv[1:])
