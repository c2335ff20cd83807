"""W&B as the dashboard: a job's run (name, group, tags, swept axes, summaries, artifacts) and a sweep's report
run (table, native charts, report artifact), read back from the offline run files wandb writes."""

import json

import pytest
import yaml

from tests.helpers import composed, wandb_offline_records, wandb_records_of
from splade_peft.results import PER_QUERY_FILE, JobResult
from splade_peft.sweep.build import build_report, log_report_to_wandb
from splade_peft.tracking import RUN_ID_FILE, ExperimentTracker, RunIdentity, wandb_arguments, wandb_mode

DATASET = "toy"
IDENTITY = RunIdentity(name="smoke:lora.r=4", group="rank", job_type="train", tags=["smoke", "lora:lora"],
                       notes="How does the rank matter?", axes={"lora.r": 4, "loss": "kl"})


def job_record(r: int, ndcg: float, logger: str = "wandb") -> dict:
    metrics = {"ndcg@10": ndcg, "mrr@10": ndcg / 2, "recall@1000": 0.9}
    return {
        "status": "completed", "seed": 42, "overrides": [f"lora.r={r}"],
        "config": {"lora": {"r": r}, "sweep": {"name": "rank", "metric": "ndcg@10"},
                   "logger": {"name": logger, "project": "splade_peft", "group": "rank", "mode": "offline"}},
        "metrics": {DATASET: metrics, "average": metrics},
        "sparsity": {DATASET: {"doc_nnz_mean": 50.0 * r, "query_nnz_mean": 9.0, "flops": 1.0}},
        "references": {"bm25": {DATASET: {"metrics": {**metrics, "ndcg@10": 0.3}}},
                       "zero_shot": {DATASET: {"metrics": {**metrics, "ndcg@10": 0.2}, "sparsity": {"doc_nnz_mean": 400.0}}}},
        "params": {"trainable": 1000 * r, "total": 10**6}, "timing": {"train_s": 10.0 * r},
        "data": {"eval": {DATASET: {"documents": 10, "queries": 2}}},
    }


def finished_job(run_dir, record: dict, identity: RunIdentity = IDENTITY) -> None:
    """What a job leaves behind: a tracked run, the adapter, results.json, per_query.json and a run file."""
    tracker = ExperimentTracker(composed("experiment=smoke").logger, run_dir, identity, record["config"])
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    (run_dir / "eval" / DATASET).mkdir(parents=True)
    (run_dir / "eval" / DATASET / "run.trec").write_text("q1 Q0 d1 1 1.0 x\n")
    JobResult.from_payload(record).write(run_dir)
    (run_dir / PER_QUERY_FILE).write_text("{}")
    tracker.log_results(JobResult.read(run_dir))
    tracker.finish(record["status"])


@pytest.fixture(scope="module")
def job_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("job")
    finished_job(run_dir, job_record(4, 0.5))
    return run_dir, wandb_offline_records(run_dir)


def test_the_run_is_named_grouped_tagged_and_annotated(job_run):
    _, records = job_run
    [run] = wandb_records_of(records, "run")
    assert (run.display_name, run.run_group, run.job_type) == ("smoke:lora.r=4", "rank", "train")
    assert set(run.tags) == {"smoke", "lora:lora"} and run.notes == "How does the rank matter?"
    config = {update.key: json.loads(update.value_json) for update in run.config.update}
    assert config["sweep_axes"] == {"lora.r": 4, "loss": "kl"}  # parallel coordinates read these
    assert config["lora"] == {"r": 4}


def test_effectiveness_metrics_keep_their_best_value_as_summary(job_run):
    _, records = job_run
    defined = {metric.name: metric for metric in wandb_records_of(records, "metric")}
    assert defined[f"test/{DATASET}/ndcg@10"].summary.max
    assert defined["test/average/ndcg@10"].summary.max
    assert f"test/{DATASET}/doc_nnz_mean" not in defined  # not a quality: its summary stays the last value
    summary = {"/".join(update.nested_key) or update.key: update.value_json
               for record in wandb_records_of(records, "summary") for update in record.update}
    assert json.loads(summary[f"test/{DATASET}/ndcg@10"]) == {"max": 0.5}
    assert json.loads(summary["status"]) == "completed"


def test_adapter_and_evaluation_files_are_artifacts(job_run):
    _, records = job_run
    artifacts = {artifact.type: {entry.path for entry in artifact.manifest.contents}
                 for artifact in wandb_records_of(records, "artifact")}
    assert artifacts["model"] == {"adapter_config.json"}
    assert artifacts["evaluation"] == {"results.json", "per_query.json", f"eval/{DATASET}/run.trec"}


def test_a_job_run_again_in_its_folder_continues_its_run(job_run, tmp_path):
    run_dir, records = job_run
    [first] = wandb_records_of(records, "run")
    assert (run_dir / RUN_ID_FILE).read_text().strip() == first.run_id
    tracker = ExperimentTracker(composed("experiment=smoke").logger, run_dir, IDENTITY, {})
    tracker.finish("completed")
    assert {run.run_id for run in wandb_records_of(wandb_offline_records(run_dir), "run")} == {first.run_id}


def test_logger_keys_pass_through_and_the_config_wins_over_derived_values():
    logger = composed("experiment=smoke", "+logger.entity=team", "logger.run_name=mine", "logger.group=g",
                      "logger.tags=[extra]").logger
    arguments = wandb_arguments(logger, IDENTITY)
    assert (arguments["entity"], arguments["name"], arguments["group"], arguments["job_type"]) == ("team", "mine", "g", "train")
    assert arguments["tags"] == ["extra", "lora:lora", "smoke"]
    assert "mode" not in arguments and "run_name" not in arguments


def test_the_environment_wins_over_the_configured_mode(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("online") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    assert (wandb_mode("online"), wandb_mode(None)) == ("online", "offline")


def test_smoke_and_scifact_local_log_to_wandb_offline():
    for experiment in ("smoke", "scifact_local"):
        logger = composed(f"experiment={experiment}").logger
        assert (logger.name, logger.mode) == ("wandb", "offline")


# --- the sweep's report run ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    task = ["lora.r=1,4,16"]
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({
        "hydra": {"sweeper": {"params": None}, "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}},
        "sweep": {"name": "rank", "metric": "ndcg@10"}, "logger": {"name": "wandb", "project": "splade_peft", "group": "rank"},
    }))
    for r, ndcg in ((1, 0.4), (4, 0.5), (16, 0.45)):
        folder = sweep_dir / f"lora.r={r}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"lora.r={r}"]))
        (folder / "results.json").write_text(json.dumps(job_record(r, ndcg)))
    report = build_report(sweep_dir)
    assert log_report_to_wandb(report) is True
    return sweep_dir, wandb_offline_records(sweep_dir)


def test_the_report_run_logs_native_charts_per_axis_and_the_pareto_front(report_run):
    _, records = report_run
    [run] = wandb_records_of(records, "run")
    assert (run.job_type, run.run_group, run.display_name) == ("report", "rank", "report-rank")
    charts = {"/".join(update.nested_key[2:]) for config in wandb_records_of(records, "config")
              for update in config.update if update.nested_key[:2] == ["_wandb", "visualize"]}
    assert {"charts/ndcg@10_vs_lora.r", "charts/quality_vs_doc_nnz", "charts/pareto_front"} <= charts


def test_the_report_run_logs_the_study_table_and_its_files(report_run):
    sweep_dir, records = report_run
    logged = {update.nested_key[0] for record in wandb_records_of(records, "history") for update in record.item
              if update.nested_key}
    assert {"sweep/results", "sweep/points"} <= logged
    [report] = [a for a in wandb_records_of(records, "artifact") if a.type == "report"]
    assert {"sweep_results.csv", "report.md"} <= {entry.path for entry in report.manifest.contents}
