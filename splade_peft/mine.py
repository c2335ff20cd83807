"""Mine hard negatives for a collection's training queries and write them in the FlagEmbedding layout.

    python -m splade_peft.mine --beir ../shared/data/scifact --split train --retriever bm25 \\
        --teacher .cache/checkpoints/splade-2l --output scifact-train-mined.jsonl
    python -m splade_peft.mine --beir ../shared/data/scifact --retriever adapter --adapter outputs/<run_dir> \\
        --filter percpos --filter-value 0.95 --output scifact-train-self-mined.jsonl

Retrievers (splade_peft/miners.py): Pyserini BM25, a trained SPLADE checkpoint searching its own exact impact
index, or a training job's saved adapter (`--adapter <run_dir>`, any encoder family, rebuilt as evaluation
rebuilds it), so "train, mine with the result, train again" is two jobs and this command between them.
`--filter` drops likely false negatives, candidates the miner scored too close to the positive (NV-Retriever's
positive-aware filters, data/false_negatives.py). With --teacher, every positive and negative is scored by that
SPLADE checkpoint into pos_scores / neg_scores. Each line also carries query_id, pos_ids and neg_ids, so
training can align it with the corpus (data.negatives_source=file data.negatives_file=... data.teacher.files=[...]).

Every encoder (the splade or adapter retriever, the teacher) runs where `--adapter`'s job trained and at its
precision (its saved trainer section), or on the CPU in fp32 without a job; --accelerator, --devices and
--precision override either, e.g. `--accelerator gpu --precision bf16-mixed`.

Beside the output, <output stem>.stats.json records the retriever, the filter and the candidates it removed
per query (mean, max, total).
"""

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from splade_peft.data.collection import Collection
from splade_peft.data.false_negatives import (FILTERS, NegativeFilter, filtered_negatives, reference_positive_score,
                                              removal_stats)
from splade_peft.data.hard_negatives import mining_stats_path
from splade_peft.data.msmarco import load_msmarco
from splade_peft.data.pairs import relevant_ids
from splade_peft.data.sources import load_collection
from splade_peft.device import DeviceKeys, job_device
from splade_peft.errors import SpladePeftError
from splade_peft.miners import Ranking, adapter_ranking, bm25_ranking, job_config, splade_checkpoint_ranking
from splade_peft.records import staged, write_json_atomic
from splade_peft.training.teacher_scoring import splade_scores

RETRIEVERS = ("bm25", "splade", "adapter")
# Where mining runs without a job to take it from, and the trainer keys a job's section gives it.
CPU_TRAINER = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
MINING_KEYS = DeviceKeys(accelerator="--accelerator", devices="--devices", on_cpu="--accelerator cpu")
# A filter removes candidates from the top of the ranking; retrieving this many times `depth` more leaves
# enough below the ceiling to still keep `depth` negatives.
FILTER_HEADROOM = 2


def retrieval_depth(collection: Collection, depth: int, negative_filter: NegativeFilter) -> int:
    headroom = FILTER_HEADROOM * depth if negative_filter.method != "none" else 0
    return depth + headroom + max(len(judged) for judged in collection.qrels.values())


def mining_trainer(job: str | None, accelerator: str | None = None, devices: str | None = None,
                   precision: str | None = None):
    """The trainer section mining runs with: the saved job's (run folder `job`) device and precision, else the CPU
    in fp32; each option given replaces its key."""
    saved = job_config(job).trainer if job else CPU_TRAINER
    chosen = {key: saved.get(key, default) for key, default in CPU_TRAINER.items()}
    given = {"accelerator": accelerator, "devices": devices, "precision": precision}
    return OmegaConf.create({**chosen, **{key: value for key, value in given.items() if value is not None}})


def ranking(collection: Collection, retriever: str, k: int, cache_dir: str, source: str | None, trainer) -> Ranking:
    if retriever == "bm25":
        return bm25_ranking(collection, k, cache_dir)
    if retriever == "splade":
        return splade_checkpoint_ranking(source, collection, k, trainer)
    return adapter_ranking(source, collection, k, cache_dir, trainer)


def mine(collection: Collection, retriever: str, depth: int, cache_dir: str, retriever_checkpoint: str | None = None,
         teacher: str | None = None, negative_filter: NegativeFilter = NegativeFilter(),
         trainer=None) -> tuple[list[dict], dict]:
    """(one FlagEmbedding record per training query with at least one negative, the mining stats); the encoders
    run on the device and at the precision of `trainer` (a trainer section; the CPU in fp32 without one)."""
    trainer = OmegaConf.create(CPU_TRAINER) if trainer is None else trainer
    mined = ranking(collection, retriever, retrieval_depth(collection, depth, negative_filter), cache_dir,
                    retriever_checkpoint, trainer)
    positives = {q: relevant_ids(collection, q) for q in collection.queries}
    candidates, removed = {}, {}
    for query_id in sorted(collection.queries):
        if not positives[query_id]:
            continue
        positive_score = reference_positive_score(list(mined.positive_scores[query_id].values()))
        candidates[query_id], removed[query_id] = filtered_negatives(
            mined.run.get(query_id, []), set(positives[query_id]), positive_score, depth, negative_filter)
    kept = [q for q in candidates if candidates[q]]
    scores = splade_scores(teacher, collection.queries, collection.corpus,
                           {q: positives[q] + list(candidates[q]) for q in kept}, trainer_cfg=trainer) if teacher else None
    records = [record(collection, q, positives[q], candidates[q], scores) for q in kept]
    stats = {"retriever": retriever, "retriever_source": retriever_checkpoint, "depth": depth,
             "filter": negative_filter.describe(), "queries": len(records),
             "queries_without_negatives": len(candidates) - len(kept),
             "negatives": sum(len(r["neg_ids"]) for r in records),
             "removed_per_query": removal_stats(removed), "unretrieved_positives": mined.unretrieved_positives,
             "teacher": teacher, "trainer": OmegaConf.to_container(trainer)}
    return records, stats


def record(collection: Collection, query_id: str, positives: list[str], negatives: tuple[str, ...],
           scores: dict | None) -> dict:
    line = {
        "query_id": query_id, "query": collection.queries[query_id],
        "pos_ids": positives, "pos": [collection.corpus[d] for d in positives],
        "neg_ids": list(negatives), "neg": [collection.corpus[d] for d in negatives],
    }
    if scores is not None:
        line["pos_scores"] = [scores[query_id][d] for d in line["pos_ids"]]
        line["neg_scores"] = [scores[query_id][d] for d in line["neg_ids"]]
    return line


def write_jsonl(records: list[dict], path: Path) -> None:
    with staged(path) as staging, staging.open("w", encoding="utf-8") as stream:
        for line in records:
            stream.write(json.dumps(line, ensure_ascii=False) + "\n")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", type=Path, help="a BEIR-layout folder")
    source.add_argument("--msmarco", nargs=3, metavar=("COLLECTION_TSV", "TOPICS_TSV", "QRELS"),
                        help="MS MARCO layout: collection.tsv, queries.train.tsv, qrels.train.tsv")
    parser.add_argument("--split", default="train")
    parser.add_argument("--retriever", choices=RETRIEVERS, default="bm25")
    parser.add_argument("--retriever-checkpoint", help="the SPLADE checkpoint that mines (--retriever splade)")
    parser.add_argument("--adapter", help="a training job's run folder (or its adapter/) that mines (--retriever adapter)")
    parser.add_argument("--teacher", help="a SPLADE checkpoint that scores every positive and negative")
    parser.add_argument("--depth", type=int, default=50, help="negatives kept per query")
    parser.add_argument("--filter", choices=FILTERS, default="none",
                        help="positive-aware false-negative filter (NV-Retriever): abs = TopK-Abs (drop candidates "
                             "scored above VALUE), margin_pos = TopK-MarginPos (above positive - VALUE), percpos = "
                             "TopK-PercPos (above VALUE x positive, e.g. 0.95)")
    parser.add_argument("--filter-value", type=float, help="the filter's threshold, margin or fraction")
    parser.add_argument("--cache", default=".cache", help="where the BM25 index (and tiny random backbones) are kept")
    parser.add_argument("--accelerator", choices=("cpu", "gpu", "cuda", "auto"),
                        help="where the encoders run (default: the --adapter job's trainer.accelerator, else cpu)")
    parser.add_argument("--devices", help="which GPU, as trainer.devices reads it: 1 (the first), or an index "
                                          "followed by a comma, e.g. 1, (default: the --adapter job's, else 1)")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed", "bf16-true", "16-mixed"),
                        help="bf16 autocast on CUDA with bf16-* (default: the --adapter job's trainer.precision, "
                             "else 32-true)")
    parser.add_argument("--output", type=Path, required=True)
    arguments = parser.parse_args(argv)
    needs = {"splade": "retriever_checkpoint", "adapter": "adapter"}.get(arguments.retriever)
    if needs and not getattr(arguments, needs):
        parser.error(f"--retriever {arguments.retriever} needs --{needs.replace('_', '-')}")
    if arguments.depth < 1:
        parser.error("--depth must be >= 1")
    try:
        arguments.negative_filter = NegativeFilter(arguments.filter, arguments.filter_value)
        job = arguments.adapter if arguments.retriever == "adapter" else None
        arguments.trainer = mining_trainer(job, arguments.accelerator, arguments.devices, arguments.precision)
        job_device(arguments.trainer, MINING_KEYS)  # a GPU asked for and not there: refused before any data is read
    except SpladePeftError as error:
        parser.error(str(error))
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.beir:
        collection = load_collection("beir", arguments.split, path=str(arguments.beir))
    else:
        collection = load_msmarco(*arguments.msmarco, name="msmarco-passage", split=arguments.split)
    source = arguments.adapter if arguments.retriever == "adapter" else arguments.retriever_checkpoint
    records, stats = mine(collection, arguments.retriever, arguments.depth, arguments.cache, source,
                          arguments.teacher, arguments.negative_filter, arguments.trainer)
    write_jsonl(records, arguments.output)
    write_json_atomic(mining_stats_path(arguments.output), stats)
    removed = stats["removed_per_query"]
    print(f"{arguments.output}: {len(records)} queries, {stats['negatives']} negatives"
          + (", teacher-scored" if arguments.teacher else "")
          + (f"; {arguments.filter} filter removed {removed['total']} candidates ({removed['mean']:.2f} per query, "
             f"max {removed['max']})" if arguments.filter != "none" else ""))


if __name__ == "__main__":
    main()
