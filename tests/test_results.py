"""The one result record: results.json read once, flattened under the sweep table's column names."""

import pytest

from splade_peft.results import JobResult, read_per_query, write_per_query
from splade_peft.summary import summary_rows
from splade_peft.tracking import logged_values

RECORD = {
    "status": "completed", "overrides": ["lora.r=4"], "data": {"eval": {"scifact": {}, "nfcorpus": {}}},
    "metrics": {"scifact": {"ndcg@10": 0.6, "mrr@10": "n/a"}, "nfcorpus": {"ndcg@10": 0.3}, "average": {"ndcg@10": 0.45}},
    "sparsity": {"scifact": {"doc_nnz_mean": 100.0}, "nfcorpus": {"doc_nnz_mean": 50}},
    "references": {"bm25": {"scifact": {"metrics": {"ndcg@10": 0.66}}, "nfcorpus": {"metrics": {"ndcg@10": 0.32}}}},
    "params": {"trainable": 36864}, "timing": {"train_s": 12.5}, "memory": {"peak_rss_mb": 900.0},
}


def test_flat_names_the_columns_of_the_sweep_table():
    flat = JobResult.from_json(RECORD).flat()
    assert flat == {
        "scifact/ndcg@10": 0.6, "nfcorpus/ndcg@10": 0.3, "average/ndcg@10": 0.45,
        "scifact/doc_nnz_mean": 100.0, "nfcorpus/doc_nnz_mean": 50, "average/doc_nnz_mean": pytest.approx(75.0),
        "params.trainable": 36864, "timing.train_s": 12.5, "memory.peak_rss_mb": 900.0,
    }


def test_tracker_and_summary_read_the_same_record():
    result = JobResult.from_json(RECORD)
    logged = logged_values(result)
    assert logged["test/scifact/ndcg@10"] == 0.6 and logged["params/trainable"] == 36864
    assert logged["reference/bm25/average/ndcg@10"] == pytest.approx(0.49)
    assert [row[:3] for row in summary_rows(result)] == [
        ["scifact", "BM25", 0.66], ["scifact", "trained", 0.6], ["nfcorpus", "BM25", 0.32], ["nfcorpus", "trained", 0.3],
    ]


def test_a_record_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(ValueError):
        JobResult.from_json(tmp_path / "results.json")


def test_per_query_values_round_trip_through_the_job_folder(tmp_path):
    rows = {"trained": {"scifact": {"ndcg@10": {"q1": 0.5, "q2": 1.0}}}, "bm25": {"scifact": {"ndcg@10": {"q1": 0.25}}}}
    assert write_per_query(tmp_path, rows) == tmp_path / "per_query.json"
    assert read_per_query(tmp_path) == rows
    assert read_per_query(tmp_path / "elsewhere") == {}
    with pytest.raises(ValueError, match="rows"):
        write_per_query(tmp_path, {"tuned": {}})
