"""The collapse stop (training.collapse_stop): a sparse encoder's job whose vectors went empty, or filled the
vocabulary after the regularisers' warm-up, fails at the next logging step in one line naming the figure, its
value, the step and the loss.lambda_* key to change."""

import json

import pytest

from splade_peft.config import validate
from splade_peft.errors import ConfigError
from splade_peft.training.collapse import collapse
from tests.helpers import composed, run_cli

HEALTHY = {"train/doc_nnz": 80.0, "train/query_nnz": 20.0}


def verdict(figures: dict, full_counts: bool = True):
    return collapse({**HEALTHY, **figures}, width=1000, min_nonzeros=1, max_fill=0.9, full_counts=full_counts)


def test_sparse_vectors_go_on():
    assert verdict({}) is None


@pytest.mark.parametrize("figure, weight", [("train/doc_nnz", "loss.lambda_d"), ("train/query_nnz", "loss.lambda_q")])
def test_empty_vectors_stop_naming_the_figure_and_the_weight_to_lower(figure, weight):
    problem = verdict({figure: 0.0}, full_counts=False)
    assert problem.startswith(f"{figure} is 0, fewer than training.collapse_stop.min_nonzeros=1")
    assert f"lower {weight}" in problem


def test_a_mean_below_one_nonzero_counts_as_empty():
    assert "(nearly) empty" in verdict({"train/query_nnz": 0.25})


@pytest.mark.parametrize("figure, weight", [("train/doc_nnz", "loss.lambda_d"), ("train/query_nnz", "loss.lambda_q")])
def test_full_vectors_stop_after_the_warmup_naming_the_weight_to_raise(figure, weight):
    problem = verdict({figure: 950.0})
    assert problem.startswith(f"{figure} is 950.0 of 1000 dimensions, more than training.collapse_stop.max_fill=0.9")
    assert f"raise {weight}" in problem


def test_full_vectors_during_the_warmup_go_on():
    # an untrained head starts dense: the regularisers' warm-up is what makes it sparse
    assert verdict({"train/doc_nnz": 1000.0}, full_counts=False) is None


@pytest.mark.parametrize("override, says", [("training.collapse_stop.max_fill=0", "a number in (0, 1]"),
                                            ("training.collapse_stop.max_fill=1.5", "a number in (0, 1]"),
                                            ("training.collapse_stop.min_nonzeros=-1", "a number >= 0")])
def test_bad_thresholds_fail_naming_the_key(override, says):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"config key '{key}'") as raised:
        validate(composed(override))
    assert says in str(raised.value)


# A huge regulariser at a huge learning rate: the vectors of the smoke preset's tiny model empty within a few steps.
COLLAPSING_JOB = (
    "experiment=smoke", "eval.bm25=false", "eval.zero_shot=false", "data.negatives_source=random", "logger=none",
    "data.max_queries=8", "data.max_documents=40", "trainer.max_steps=12", "trainer.log_every_n_steps=1",
    "loss.lambda_d=1e4", "loss.lambda_q=1e4", "optim.lr=0.5",
)


@pytest.mark.slow
def test_a_job_whose_vectors_empty_fails_at_the_next_logging_step(tmp_path):
    job = run_cli(tmp_path, *COLLAPSING_JOB, timeout=300)
    assert job.returncode != 0
    results = json.loads((tmp_path / "results.json").read_text())
    error = results["error"]
    assert results["status"] == "failed" and error.startswith("VectorsCollapsedError: train/"), error
    assert "fewer than training.collapse_stop.min_nonzeros=1" in error and "-- lower loss.lambda_" in error
    stopped_at = int(error.split("(at step ")[1].split(";")[0])
    assert 0 < stopped_at < 12 and "\n" not in error
    assert error in job.stderr + job.stdout  # the same line on the console


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_under_ddp_both_processes_stop_at_the_same_step(tmp_path):
    # Each process sees its own batches; the figures are averaged first, so no process waits for a stopped one.
    job = run_cli(tmp_path, *COLLAPSING_JOB, "data.max_queries=16", "trainer.devices=2", timeout=500)
    results = json.loads((tmp_path / "results.json").read_text())
    assert job.returncode != 0 and results["status"] == "failed", job.stderr[-3000:]
    assert results["error"].startswith("VectorsCollapsedError: train/") and "(at step " in results["error"]


@pytest.mark.slow
def test_the_stop_can_be_turned_off(tmp_path):
    job = run_cli(tmp_path, *COLLAPSING_JOB, "trainer.max_steps=6", "training.collapse_stop.enabled=false", timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"
