"""BM25 + zero-shot fused at inference: CombSUM of per-query min-max scores, and the job's fused row."""

import json

import pytest

from splade_peft.evaluation.fusion import fuse
from tests.helpers import run_cli

BM25 = {"q": [("a", 10.0), ("b", 5.0), ("c", 0.0)]}
SPLADE = {"q": [("c", 30.0), ("a", 20.0), ("d", 10.0)]}


def test_fusion_sums_normalised_scores_and_keeps_the_top_k():
    fused = fuse(BM25, SPLADE, 0.5, k=3)
    assert fused == {"q": [("a", 0.75), ("c", 0.5), ("b", 0.25)]}


def test_a_weight_of_one_is_the_first_run():
    assert [doc for doc, _ in fuse(BM25, SPLADE, 1.0, k=3)["q"]] == ["a", "b", "c"]


@pytest.mark.slow
def test_an_evaluation_job_reports_the_fused_row(tmp_path):
    completed = run_cli(tmp_path, "experiment=smoke", "logger=none", "lora=frozen", "eval.fusion=0.5",
                        "data.max_queries=30", "data.max_documents=200")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "BM25 + zero-shot" in completed.stdout
    result = json.loads((tmp_path / "results.json").read_text())
    fused = result["references"]["fusion"]
    assert 0 <= next(iter(fused.values()))["metrics"]["ndcg@10"] <= 1
    assert set(json.loads((tmp_path / "per_query.json").read_text())) == {"trained", "bm25", "zero_shot", "fusion"}
