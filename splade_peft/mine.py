"""Mine hard negatives for a collection's training queries and write them in the FlagEmbedding layout.

    python -m splade_peft.mine --beir ../shared/data/scifact --split train --retriever bm25 \\
        --teacher .cache/checkpoints/splade-2l --output scifact-train-mined.jsonl

Retrievers: Pyserini BM25, or a trained SPLADE checkpoint searching its own exact impact index
(self-mining). With --teacher, every positive and negative is scored by that SPLADE checkpoint into
pos_scores / neg_scores. Each line also carries query_id, pos_ids and neg_ids, so training can align
it with the corpus (data.negatives_source=file data.negatives_file=... data.teacher.files=[...]).
"""

import argparse
import json
from pathlib import Path

from splade_peft.data.collection import Collection
from splade_peft.data.msmarco import load_msmarco
from splade_peft.data.pairs import bm25_candidates, relevant_ids
from splade_peft.data.sources import load_collection
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import quantize
from splade_peft.records import staged
from splade_peft.search.bm25 import cached_bm25_run
from splade_peft.search.exact import ExactImpactSearcher
from splade_peft.search.runs import Run
from splade_peft.training.teacher_scoring import load_splade, splade_scores

QUANTIZATION = 100


def splade_run(checkpoint: str | Path, collection: Collection, k: int) -> Run:
    encoder, tokenizer = load_splade(checkpoint)
    documents = ((d, quantize(v, QUANTIZATION)) for d, v in encode_texts(encoder, tokenizer, collection.corpus, 256))
    queries = {q: quantize(v, QUANTIZATION) for q, v in encode_texts(encoder, tokenizer, collection.queries, 32)}
    return ExactImpactSearcher(documents).search(queries, k)


def mine(collection: Collection, retriever: str, depth: int, cache_dir: str, retriever_checkpoint: str | None = None,
         teacher: str | None = None) -> list[dict]:
    """One FlagEmbedding record per training query with at least one negative."""
    k = depth + max(len(judged) for judged in collection.qrels.values())
    run = cached_bm25_run(collection, cache_dir, k, threads=2)[0] if retriever == "bm25" else splade_run(retriever_checkpoint, collection, k)
    candidates = bm25_candidates(collection, run, depth)  # top hits minus the judged-relevant ones
    positives = {q: relevant_ids(collection, q) for q in collection.queries}
    kept = [q for q in sorted(collection.queries) if candidates[q] and positives[q]]
    scores = splade_scores(teacher, collection.queries, collection.corpus,
                           {q: positives[q] + list(candidates[q]) for q in kept}) if teacher else None
    records = []
    for query_id in kept:
        record = {
            "query_id": query_id, "query": collection.queries[query_id],
            "pos_ids": positives[query_id], "pos": [collection.corpus[d] for d in positives[query_id]],
            "neg_ids": list(candidates[query_id]), "neg": [collection.corpus[d] for d in candidates[query_id]],
        }
        if scores is not None:
            record["pos_scores"] = [scores[query_id][d] for d in record["pos_ids"]]
            record["neg_scores"] = [scores[query_id][d] for d in record["neg_ids"]]
        records.append(record)
    return records


def write_jsonl(records: list[dict], path: Path) -> None:
    with staged(path) as staging, staging.open("w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", type=Path, help="a BEIR-layout folder")
    source.add_argument("--msmarco", nargs=3, metavar=("COLLECTION_TSV", "TOPICS_TSV", "QRELS"),
                        help="MS MARCO layout: collection.tsv, queries.train.tsv, qrels.train.tsv")
    parser.add_argument("--split", default="train")
    parser.add_argument("--retriever", choices=("bm25", "splade"), default="bm25")
    parser.add_argument("--retriever-checkpoint", help="the SPLADE checkpoint that mines (--retriever splade)")
    parser.add_argument("--teacher", help="a SPLADE checkpoint that scores every positive and negative")
    parser.add_argument("--depth", type=int, default=50, help="negatives kept per query")
    parser.add_argument("--cache", default=".cache", help="where the BM25 index is kept")
    parser.add_argument("--output", type=Path, required=True)
    arguments = parser.parse_args(argv)
    if arguments.retriever == "splade" and not arguments.retriever_checkpoint:
        parser.error("--retriever splade needs --retriever-checkpoint")
    if arguments.depth < 1:
        parser.error("--depth must be >= 1")
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.beir:
        collection = load_collection("beir", arguments.split, path=str(arguments.beir))
    else:
        collection = load_msmarco(*arguments.msmarco, name="msmarco-passage", split=arguments.split)
    records = mine(collection, arguments.retriever, arguments.depth, arguments.cache,
                   arguments.retriever_checkpoint, arguments.teacher)
    write_jsonl(records, arguments.output)
    print(f"{arguments.output}: {len(records)} queries, {sum(len(r['neg_ids']) for r in records)} negatives"
          + (", teacher-scored" if arguments.teacher else ""))


if __name__ == "__main__":
    main()
