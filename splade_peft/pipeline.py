"""One job, stage by stage: data -> reference rows (BM25, zero-shot) -> encoder + adapter -> fit ->
evaluation of the trained encoder -> the result record. Each stage lives in its own module; this one
only composes them and gathers what they return into results.json's fields."""

import copy
from functools import partial
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from splade_peft.config import validate
from splade_peft.data.collection import Collection
from splade_peft.data.dev_split import DEV_SPLIT, DevSplit, carve_dev
from splade_peft.data.hard_negatives import mining_record
from splade_peft.device import job_device, set_up_job_device
from splade_peft.data.sources import load_data, load_eval_collections
from splade_peft.evaluation.metrics import per_query, standard_measures
from splade_peft.evaluation.config import allowed_test_selection_warnings
from splade_peft.evaluation.references import missing_reference_rows, reference_rows
from splade_peft.evaluation.suites import suite_summaries
from splade_peft.evaluation.retrieval import RUN_FILE, EvaluationSettings, evaluate_trained
from splade_peft.memory import peak_memory_mb
from splade_peft.errors import ConfigError
from splade_peft.model.adapters import check_targets, count_parameters, scale_adapters, wrap_with_adapter
from splade_peft.model.backbones import load_backbone
from splade_peft.model.decoders import is_decoder
from splade_peft.model.sanity import check_backbone
from splade_peft.model.saved import backbone_config, saved_encoder
from splade_peft.model.variants import build_encoder
from splade_peft.progress import stage
from splade_peft.records import fingerprint, folder_fingerprint, library_versions, redact, write_json_atomic
from splade_peft.data.exposure import query_groups
from splade_peft.results import QUERY_GROUPS_FILE, macro_average, write_per_query
from splade_peft.search.runs import read_trec_run
from splade_peft.training.distributed import is_rank_zero
from splade_peft.training.datamodule import training_data
from splade_peft.training.fit import fit, trains
from splade_peft.training.losses import needs_teacher_scores
from splade_peft.training.validation import ValidationSplit, selection_metrics


def run_job(cfg: DictConfig, run_dir: Path, tracker) -> dict:
    root = validate(cfg)
    set_up_job_device(cfg.trainer)  # a GPU asked for and not there stops the job here, before any stage
    L.seed_everything(cfg.seed, workers=True)
    saved = saved_encoder(cfg.model.adapter)  # a job's adapter folder to evaluate
    with stage("data"):
        # A selection-stage job never opens the splits it would be confirmed on.
        evaluated = load_eval_collections({} if cfg.eval.selection_only else cfg.eval.datasets, cfg.paths.cache,
                                          cfg.eval.local_copies)
        eval_collections = evaluated.collections
        train_collection = load_data(cfg.data, cfg.data.train_split, cfg.paths.cache) if needs_training_split(cfg) else None
        dev_split = carved_dev(cfg, train_collection)
        if dev_split:
            train_collection = dev_split.training  # training, mining and teacher scoring never see a dev query
    results = {"data": describe_data(train_collection, eval_collections, dev_split)}
    warnings = allowed_test_selection_warnings(root) if cfg.eval.allow_test_selection else []
    if warnings:
        results["warnings"] = warnings
    masked_lm, tokenizer = load_backbone(
        backbone_config(cfg.model), cfg.paths.cache, cfg.lora.quantization, cfg.trainer.precision,
        device=job_device(cfg.trainer), method=cfg.lora.method,
    )
    if not saved:
        check_targets(masked_lm, cfg.lora)  # a bad lora.target_modules stops the job before any reference row
    if asks_backbone(cfg, masked_lm):
        with stage("backbone check"):
            results["backbone_check"] = {"answers": check_backbone(masked_lm, tokenizer, cfg.model.chat_template, cfg.trainer)}
    model_fingerprint = describe_model(cfg, masked_lm)
    idf_corpus = (train_collection or next(iter(eval_collections.values()))).corpus
    # Under DDP only rank zero computes the reference rows and evaluates; the other ranks only train.
    evaluation = evaluation_settings(cfg, evaluated.max_lengths)
    # A zero-shot row another job of the sweep is producing is not waited for: this job trains meanwhile.
    rows = partial(reference_rows, tokenizer=tokenizer, collections=eval_collections, idf_corpus=idf_corpus,
                   settings=evaluation, cache_dir=cfg.paths.cache, model_fingerprint=model_fingerprint,
                   bm25=cfg.eval.bm25, zero_shot=cfg.eval.zero_shot, fusion_weight=cfg.eval.fusion)
    references = rows(masked_lm, skip_busy=True) if is_rank_zero() else {}

    encoder = build_encoder(
        cfg.encoder, masked_lm, tokenizer, idf_corpus, cfg.model.doc_max_length,
        adapt=saved.adapt() if saved else lambda lm: wrap_with_adapter(lm, cfg.lora, cfg.trainer.max_steps),
    )
    if saved:
        saved.load_own_parameters(encoder)
    results["params"] = count_parameters(encoder)
    with stage("training"):
        data = training_data(
            train_collection, cfg.data, tokenizer, cfg.model.query_max_length, cfg.model.doc_max_length, seed=cfg.seed,
            cache_dir=cfg.paths.cache, search_threads=cfg.eval.search_threads, teacher_device=cfg.trainer,
            loss_reads_teacher=needs_teacher_scores(cfg.loss.weights), validation=ValidationSplit.of(cfg.eval, cfg.index),
            dev=dev_split.dev if dev_split else None,
        )
        if trains(encoder) and cfg.eval.zero_shot and is_rank_zero():
            data.setup("fit")  # as fit does first: the selection split exists from here on
            if data.selection:
                results["dev_at_start"] = selection_metrics(encoder, data.selection, cfg.trainer)
        training = fit(encoder, data, cfg.loss, cfg.optim, cfg.trainer, cfg.training, run_dir,
                       tracker.lightning_logger if tracker else False, selection_metric=cfg.sweep.metric,
                       config_fingerprint=training_fingerprint(cfg))
    if not is_rank_zero():
        return {"training": training}
    if missing_reference_rows(references, eval_collections, zero_shot=cfg.eval.zero_shot):
        # From the store once the other job is done, or computed here if it died; on the backbone as loaded, which
        # training has changed in place.
        references = rows(load_backbone(backbone_config(cfg.model), cfg.paths.cache, cfg.lora.quantization,
                                        cfg.trainer.precision, device=job_device(cfg.trainer), method=cfg.lora.method)[0])
    results["references"] = {row: {name: summary for name, (_, summary) in by_dataset.items()}
                              for row, by_dataset in references.items()}
    results["params"]["adapter_bytes"] = training.pop("adapter_bytes")
    if trains(encoder) and cfg.data.negatives_source == "file" and (mining := mining_record(cfg.data.negatives_file)):
        results["negatives_mining"] = mining
    results["memory"] = {**peak_memory_mb(), **training.pop("memory")}  # whole-process peak, then training's

    adapted_fingerprint = model_fingerprint
    for adapter in [run_dir / "adapter", *([saved.folder] if saved else [])]:
        if adapter.is_dir():
            adapted_fingerprint = f"{model_fingerprint}+adapter:{folder_fingerprint(adapter)}"
    if cfg.eval.adapter_scale != 1:
        scale_trained_adapters(encoder, cfg.eval.adapter_scale)
        adapted_fingerprint = f"{adapted_fingerprint}+scale:{cfg.eval.adapter_scale}"
    if data.selection:
        with stage("dev"):
            results["dev"] = selection_metrics(encoder, data.selection, cfg.trainer)
    if cfg.eval.selection_only:
        results["timing"] = {"train_s": training["train_s"]}
        results["training"] = training
        return results
    with stage("evaluation"):
        untouched = cfg.lora.method == "frozen" and not saved and adapted_fingerprint == model_fingerprint
        if untouched and set(references.get("zero_shot", {})) == set(eval_collections):
            # Nothing trained or loaded (lora=frozen): the trained row is the zero-shot row, encoded once.
            evaluations = {name: (run_file.parent, summary) for name, (run_file, summary) in references["zero_shot"].items()}
        else:
            evaluations = evaluate_trained(encoder, tokenizer, eval_collections, evaluation, run_dir, adapted_fingerprint)
    summaries = {name: summary for name, (_, summary) in evaluations.items()}
    results["metrics"] = {name: s["metrics"] for name, s in summaries.items()}
    results["metrics"]["average"] = macro_average({name: s["metrics"] for name, s in summaries.items()})
    results["sparsity"] = {name: s["sparsity"] for name, s in summaries.items() if "sparsity" in s}
    # Dense encoders: family, embedding dimension and index size in place of non-zeros.
    representations = {name: s["representation"] for name, s in summaries.items() if "representation" in s}
    if representations:
        results["representation"] = representations
    results["timing"] = {"train_s": training["train_s"], **sum_timings(s["timing"] for s in summaries.values())}
    results["training"] = training
    run_files = {"trained": {name: folder / RUN_FILE for name, (folder, _) in evaluations.items()},
                 **{row: {name: run_file for name, (run_file, _) in by_dataset.items()}
                    for row, by_dataset in references.items()}}
    per_query_values = per_query_metrics(run_files, eval_collections)
    write_per_query(run_dir, per_query_values)
    if evaluated.suites:
        results["suites"] = suite_summaries(evaluated.suites, results["metrics"], per_query_values, cfg.sweep.metric,
                                            cfg.sweep.margin, cfg.sweep.test)
    if data.members:
        write_query_groups(run_dir / QUERY_GROUPS_FILE, data.examples(), eval_collections)
    return results


def scale_trained_adapters(encoder, scale: float) -> None:
    if not sum(scale_adapters(side.masked_lm, scale) for side in encoder.language_model_encoders()):
        raise ConfigError("eval.adapter_scale", f"{scale} scales a LoRA update, and the evaluated encoder has no LoRA "
                          "layer", "evaluate a LoRA adapter, or use eval.adapter_scale=1")


def write_query_groups(path: Path, examples, eval_collections: dict[str, Collection]) -> None:
    """Per evaluated dataset, its queries whose relevant documents training took as positives, pushed down as
    negatives, or never used: the sweep report's seen / exposed / unseen split."""
    groups = query_groups(examples, eval_collections)
    if groups:
        write_json_atomic(path, groups)


def evaluation_settings(cfg: DictConfig, max_lengths: dict | None = None) -> EvaluationSettings:
    return EvaluationSettings(
        index=cfg.index, trainer=cfg.trainer, encoder=cfg.encoder, query_max_length=cfg.model.query_max_length,
        doc_max_length=cfg.model.doc_max_length, k=cfg.eval.k, search_threads=cfg.eval.search_threads,
        dataset_max_lengths=max_lengths or {},
    )


def training_fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint must have been trained with to be resumed (the study bookkeeping aside). Paths are
    named, not expanded: the same job run from another checkout or cache (a git worktree) is the same job,
    where a mismatch would discard its checkpoints."""
    placed = copy.deepcopy(cfg)
    with open_dict(placed):
        for key in list(placed.paths):
            placed.paths[key] = f"<paths.{key}>"
    config = OmegaConf.to_container(placed, resolve=True)
    return fingerprint({key: value for key, value in config.items() if key not in ("sweep", "logger")})


def asks_backbone(cfg: DictConfig, language_model) -> bool:
    """The sanity check runs before a decoder trains, on a pretrained backbone kept whole: a random or
    truncated one (model.random_init, model.num_layers) cannot answer anything."""
    return (cfg.model.sanity_check and cfg.lora.method != "frozen" and is_decoder(language_model)
            and not cfg.model.random_init and not cfg.model.num_layers)


def needs_training_split(cfg: DictConfig) -> bool:
    """An evaluation-only job (lora=frozen) needs no training split: most BEIR collections have none."""
    return cfg.lora.method != "frozen"


def per_query_metrics(run_files: dict[str, dict[str, Path]], collections: dict[str, Collection]) -> dict:
    """{row: {dataset: {metric: {query id: value}}}} for the trained, zero-shot and BM25 rows: what the
    sweep report's paired significance tests compare."""
    def scored(collection: Collection, run_file: Path) -> dict:
        grade = collection.min_relevant_grade
        return per_query(collection.qrels, read_trec_run(run_file), standard_measures(grade), grade)

    return {row: {name: scored(collections[name], run_file) for name, run_file in by_dataset.items()}
            for row, by_dataset in run_files.items()}


def sum_timings(timings) -> dict:
    total: dict = {}
    for timing in timings:
        for key, seconds in timing.items():
            total[key] = total.get(key, 0.0) + seconds
    return total


def carved_dev(cfg: DictConfig, train_collection: Collection | None) -> DevSplit | None:
    """The dev split eval.validation_split=dev chooses on, carved from the training queries; none for a job
    that trains on no collection queries (evaluation only, or data.training_file)."""
    if train_collection is None or cfg.data.training_file or cfg.eval.validation_split != DEV_SPLIT:
        return None
    return carve_dev(train_collection, cfg.data.dev.queries, cfg.data.dev.seed)


def describe_data(train_collection: Collection | None, eval_collections: dict, dev_split: DevSplit | None = None) -> dict:
    def describe(collection: Collection) -> dict:
        return {
            "fingerprint": collection.fingerprint, "split": collection.split,
            "documents": len(collection.corpus), "queries": len(collection.queries),
        }

    described = {"eval": {name: describe(c) for name, c in eval_collections.items()}}
    if dev_split:
        described["dev"] = dev_split.describe()
    return {"train": describe(train_collection), **described} if train_collection else described


def describe_model(cfg: DictConfig, masked_lm) -> str:
    source = Path(masked_lm.name_or_path)
    checkpoint = folder_fingerprint(source) if source.is_dir() else str(cfg.model.name_or_path)
    return f"{checkpoint}+{cfg.lora.quantization}" if cfg.lora.quantization else checkpoint


def job_record(cfg: DictConfig) -> dict:
    """The reproducibility fields written into results.json from the start."""
    return {
        "seed": cfg.seed,
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
        "versions": library_versions(),
    }
