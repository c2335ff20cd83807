"""`python -m splade_peft` as a user types it: a full smoke run, and failures that explain themselves."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, run_cli
from splade_peft.export import export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path_factory.mktemp("smoke")
    return run_cli(run_dir, "experiment=smoke", "logger=wandb"), run_dir


def test_smoke_run_completes_with_every_result_field(smoke_run):
    completed, run_dir = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    dataset = "stdlib-docstrings"
    for metric in ("mrr@10", "recall@100", "recall@1000", "ndcg@10"):
        assert 0.0 <= results["metrics"][dataset][metric] <= 1.0
        assert results["metrics"]["average"][metric] == results["metrics"][dataset][metric]
    for key in ("doc_nnz_mean", "query_nnz_mean", "flops"):
        assert results["sparsity"][dataset][key] >= 0
    assert 0 < results["params"]["trainable"] < results["params"]["total"]
    assert set(results["timing"]) >= {"train_s", "encode_s", "index_s", "search_s"}
    assert results["versions"]["pyserini"] == "1.6.0"
    assert len(results["data"]["train"]["fingerprint"]) == 16 and results["seed"] == 42
    # BM25 on known-item docstring search is a strong, non-trivial reference.
    assert results["references"]["bm25"][dataset]["metrics"]["mrr@10"] > 0.2
    assert dataset in results["references"]["zero_shot"]


def test_smoke_run_leaves_its_artefacts(smoke_run):
    completed, run_dir = smoke_run
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    eval_dir = run_dir / "eval" / "stdlib-docstrings"
    assert (eval_dir / "_complete.json").exists() and (eval_dir / "index").is_dir()
    assert len((eval_dir / "run.trec").read_text().splitlines()) > 100
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "W&B offline run missing"


def test_smoke_run_exports_with_a_model_card_of_its_results(smoke_run, tmp_path):
    """The exported README.md is our card, from the run's results.json, not sentence-transformers' template."""
    completed, run_dir = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    card = (export(run_dir, tmp_path / "exported") / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    results = json.loads((run_dir / "results.json").read_text())
    figures, ndcg = meta["model-index"][0]["results"], results["metrics"]["stdlib-docstrings"]["ndcg@10"]
    assert [entry["dataset"]["name"] for entry in figures] == ["stdlib-docstrings"]
    assert {"type": "ndcg_at_10", "value": ndcg, "name": "nDCG@10"} in figures[0]["metrics"]
    assert {"sparse-encoder", "splade", "peft", "lora"} <= set(meta["tags"])
    assert "Unknown" not in card and results["config_fingerprint"] in card and "| stdlib-docstrings | test | BM25 |" in card


def test_smoke_run_prints_the_summary_table(smoke_run):
    completed, _ = smoke_run
    for row in ("BM25", "zero-shot", "trained"):
        assert row in completed.stdout


def test_smoke_run_log_holds_no_known_library_noise(smoke_run):
    """Lightning's logger advert and the deprecations libraries raise at each other drown a job's own lines."""
    completed, _ = smoke_run
    for noise in ("litlogger", "LeafSpec", "is_gradient_checkpointing", "anonymous setting"):
        assert noise not in completed.stdout + completed.stderr, noise


def one_line_error(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.startswith("splade_peft:")]
    assert lines, completed.stderr[-2000:]
    return lines[0]


def failed_results(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    return results


def test_missing_data_path_names_the_key(tmp_path):
    completed = run_cli(tmp_path, "experiment=smoke", "data=beir")
    assert "data.path" in one_line_error(completed)
    assert not (tmp_path / "results.json").exists()  # refused by the command line's check: no job started


def test_malformed_jsonl_names_file_and_line(tmp_path):
    collection = tmp_path / "broken"
    (collection / "qrels").mkdir(parents=True)
    (collection / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "fine"}\n{"_id": "d2", "text": \n')
    (collection / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    for split in ("train", "test"):  # the evaluation split loads first: both exist, so the corpus is what fails
        (collection / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    completed = run_cli(tmp_path / "run", "experiment=smoke", "data=beir", f"data.path={collection}")
    message = one_line_error(completed)
    assert "corpus.jsonl" in message and "line 2" in message


def test_missing_checkpoint_names_the_make_target(tmp_path):
    completed = run_cli(tmp_path, "experiment=smoke", "model=splade_2l", f"paths.checkpoints={tmp_path}/none")
    assert "make checkpoints" in one_line_error(completed)


def test_unknown_option_fails_before_the_job(tmp_path):
    completed = run_cli(tmp_path, "lora.rank=4")
    assert completed.returncode != 0 and "lora.rank" in completed.stderr
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("adapter", ["dora", "full", "frozen"])
def test_every_adapter_option_runs_end_to_end(tmp_path, adapter):
    completed = run_cli(tmp_path, "experiment=smoke", f"lora={adapter}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    dataset = "stdlib-docstrings"
    assert results["status"] == "completed" and 0 <= results["metrics"][dataset]["ndcg@10"] <= 1
    params = results["params"]
    if adapter == "frozen":
        assert params["trainable"] == 0 and results["training"]["steps"] == 0
        assert results["metrics"][dataset] == results["references"]["zero_shot"][dataset]["metrics"]
    elif adapter == "full":
        assert params["trainable"] == params["total"]
    else:
        assert 0 < params["trainable"] < params["total"]


def write_msmarco_folder(folder: Path) -> None:
    """The embedded collection in the MS MARCO passage layout: its train split as queries.train.tsv, its
    test split as the dev subset."""
    from splade_peft.data.sources import load_collection

    def line(key: str, text: str) -> str:
        return f"{key}\t{' '.join(text.split())}\n"

    splits = {name: load_collection("embedded", name, cache_dir=REPO / ".cache") for name in ("train", "test")}
    (folder / "collection.tsv").write_text("".join(line(d, t) for d, t in splits["train"].corpus.items()))
    for split, (topics, qrels) in {"train": ("queries.train.tsv", "qrels.train.tsv"),
                                   "test": ("topics.msmarco-passage.dev-subset.txt",
                                            "qrels.msmarco-passage.dev-subset.txt")}.items():
        collection = splits[split]
        (folder / topics).write_text("".join(line(q, t) for q, t in collection.queries.items()))
        (folder / qrels).write_text("".join(f"{q} 0 {d} {g}\n" for q, judged in collection.qrels.items()
                                            for d, g in judged.items()))


def test_msmarco_files_train_and_evaluate_end_to_end(tmp_path):
    write_msmarco_folder(tmp_path)
    completed = run_cli(tmp_path / "run", "experiment=smoke", "data=msmarco_files", f"data.path={tmp_path}",
                        "data.negatives_source=bm25")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["training"]["steps"] == 6
    # The random tiny model ranks near chance; BM25 on the same files shows that ids, topics and qrels line up.
    assert 0 <= results["metrics"]["msmarco-passage"]["ndcg@10"] <= 1
    assert results["references"]["bm25"]["msmarco-passage"]["metrics"]["ndcg@10"] > 0.4
