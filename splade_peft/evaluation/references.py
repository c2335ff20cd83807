"""The rows a trained model is compared with on every eval collection: BM25 and the starting checkpoint
without adapter (zero-shot), both kept in the shared cache so a sweep computes them once per collection
and checkpoint; and, when asked for, the two fused at inference (eval.fusion)."""

from pathlib import Path

from splade_peft.data.collection import Collection
from splade_peft.evaluation.fusion import fuse
from splade_peft.evaluation.metrics import evaluate
from splade_peft.evaluation.retrieval import RUN_FILE, EvaluationSettings, evaluate_in_store, evaluation_inputs
from splade_peft.model.variants import build_encoder
from splade_peft.progress import stage
from splade_peft.records import StageBusy, StageStore, fingerprint
from splade_peft.search.bm25 import cached_bm25_run
from splade_peft.search.runs import read_trec_run, without_self_hits, write_trec_run


def bm25_reference(collection: Collection, cache_dir: str | Path, k: int, threads: int) -> tuple[Path, dict]:
    """(BM25's TREC run file, {"metrics": ...}) on `collection`; without the queries' own documents where the
    collection's convention says so (ignore_identical_ids), retrieved one deeper to still hold k."""
    run, run_file = cached_bm25_run(collection, cache_dir, k + collection.ignore_identical_ids, threads)
    if collection.ignore_identical_ids:
        run, run_file = without_self_hits(run, k), run_file.with_name("run.without_self_hits.trec")
        write_trec_run(run, run_file, "bm25")
    return run_file, {"metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade)}


def zero_shot_reference(encoder, tokenizer, collection: Collection, settings: EvaluationSettings, cache_dir: str | Path,
                        model_fingerprint: str, wait: bool = True) -> tuple[Path, dict]:
    """(the untrained encoder's TREC run file, its evaluation summary) on `collection`; without `wait`, StageBusy
    while another job produces it."""
    store = StageStore(Path(cache_dir) / "zero_shot")
    name = fingerprint(evaluation_inputs(settings, collection, model_fingerprint))
    folder, summary = evaluate_in_store(store, name, encoder, tokenizer, collection, settings, model_fingerprint, wait)
    return folder / RUN_FILE, summary


def reference_rows(masked_lm, tokenizer, collections: dict[str, Collection], idf_corpus: dict[str, str],
                   settings: EvaluationSettings, cache_dir: str | Path, model_fingerprint: str, *, bm25: bool,
                   zero_shot: bool, fusion_weight: float | None = None,
                   skip_busy: bool = False) -> dict[str, dict[str, tuple[Path, dict]]]:
    """{"bm25": {dataset: (run file, summary)}, "zero_shot": {...}, "fusion": {...}}, each row where asked for
    (eval.bm25, eval.zero_shot; eval.fusion, the BM25 weight of the fused row, null: no fused row).

    `skip_busy`: a zero-shot row another job is producing right now is left out (its fused row too) instead of
    waited for: the jobs of an array train meanwhile, and take it from the store after training
    (missing_reference_rows).

    The zero-shot row is the encoder variant as training starts from it: the loaded LM on both sides
    (splade_separate's two copies are still one), an inference-free query table at its IDF values over
    `idf_corpus`, the sparsifiers at their configured cut-offs.
    """
    references = {"bm25": {}, "zero_shot": {}, **({"fusion": {}} if fusion_weight is not None else {})}
    base_encoder = build_encoder(settings.encoder, masked_lm, tokenizer, idf_corpus, settings.doc_max_length)
    if base_encoder.own_parameters():
        model_fingerprint = f"{model_fingerprint}+encoder:{base_encoder.own_parameters_fingerprint()}"
    for name, collection in collections.items():
        if bm25:
            with stage(f"BM25 on {name}"):
                references["bm25"][name] = bm25_reference(collection, cache_dir, settings.k, settings.search_threads)
        if zero_shot:
            with stage(f"zero-shot on {name}"):
                try:
                    references["zero_shot"][name] = zero_shot_reference(
                        base_encoder, tokenizer, collection, settings.for_dataset(name), cache_dir, model_fingerprint,
                        wait=not skip_busy)
                except StageBusy:
                    continue
        if fusion_weight is not None:
            references["fusion"][name] = fused_reference(
                collection, references["bm25"][name][0], references["zero_shot"][name][0], fusion_weight, settings.k,
                Path(cache_dir) / "fusion" / fingerprint([model_fingerprint, collection.fingerprint, fusion_weight]))
    return references


def missing_reference_rows(references: dict, datasets, *, zero_shot: bool) -> bool:
    """Whether reference_rows(skip_busy=True) left a zero-shot row out."""
    return zero_shot and set(references.get("zero_shot", {})) != set(datasets)


def fused_reference(collection: Collection, bm25_run: Path, zero_shot_run: Path, bm25_weight: float, k: int,
                    folder: Path) -> tuple[Path, dict]:
    """(the fused TREC run file, {"metrics": ...}) of BM25 and the zero-shot row on `collection`."""
    run = fuse(read_trec_run(bm25_run), read_trec_run(zero_shot_run), bm25_weight, k)
    folder.mkdir(parents=True, exist_ok=True)
    write_trec_run(run, folder / RUN_FILE, "bm25+zero_shot")
    return folder / RUN_FILE, {"metrics": evaluate(collection.qrels, run, min_relevant_grade=collection.min_relevant_grade)}
