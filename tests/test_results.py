"""The one result record: results.json written and read back through one type, flattened under the sweep
table's column names."""

import json
import math

import pytest

from splade_peft.records import REDACTED
from splade_peft.results import FAILED, RESULTS_FILE, UNKNOWN, JobResult, read_per_query, write_per_query
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
    flat = JobResult.from_payload(RECORD).flat()
    assert flat == {
        "scifact/ndcg@10": 0.6, "nfcorpus/ndcg@10": 0.3, "average/ndcg@10": 0.45,
        "scifact/doc_nnz_mean": 100.0, "nfcorpus/doc_nnz_mean": 50, "average/doc_nnz_mean": pytest.approx(75.0),
        "params.trainable": 36864, "timing.train_s": 12.5, "memory.peak_rss_mb": 900.0,
    }


def test_tracker_and_summary_read_the_same_record():
    result = JobResult.from_payload(RECORD)
    logged = logged_values(result)
    assert logged["test/scifact/ndcg@10"] == 0.6 and logged["params/trainable"] == 36864
    assert logged["reference/bm25/average/ndcg@10"] == pytest.approx(0.49)
    assert [row[:3] for row in summary_rows(result)] == [
        ["scifact", "BM25", 0.66], ["scifact", "trained", 0.6], ["nfcorpus", "BM25", 0.32], ["nfcorpus", "trained", 0.3],
    ]


def test_a_kept_best_checkpoints_dev_figure_is_labelled_as_the_maximum_it_was_chosen_as():
    from splade_peft.summary import KEPT_BEST, KEPT_NOTE, format_table

    dev = {"ndcg@10": 0.7}
    last = JobResult.from_payload({**RECORD, "dev": dev, "training": {"steps": 200}})
    kept = JobResult.from_payload({**RECORD, "dev": dev, "training": {"steps": 200, "kept": {"step": 150}}})
    assert summary_rows(last)[-1][:3] == ["chosen on", "trained", 0.7]
    assert summary_rows(kept)[-1][:3] == ["chosen on", KEPT_BEST, 0.7]
    assert KEPT_NOTE in format_table(kept) and KEPT_NOTE not in format_table(last)


def test_a_record_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(ValueError):
        JobResult.read(tmp_path)


def test_a_written_record_reads_back_as_the_same_record_and_the_same_json(tmp_path):
    payload = {**RECORD, "seed": 42, "config": {"lora": {"r": 4}}, "versions": {"python": "3.11"},
               "config_fingerprint": "c6e9410e54064739", "representation": {"scifact": {"family": "dense"}},
               "training": {"steps": 6}}
    result = JobResult.from_payload(payload)
    assert result.write(tmp_path) == tmp_path / RESULTS_FILE
    assert JobResult.read(tmp_path) == result == JobResult.read(tmp_path / RESULTS_FILE)
    assert json.loads((tmp_path / RESULTS_FILE).read_text()) == payload


def test_fields_never_set_are_left_out_of_the_file_in_declaration_order(tmp_path):
    JobResult(seed=1, overrides=["seed=1"]).write(tmp_path)
    assert list(json.loads((tmp_path / RESULTS_FILE).read_text())) == ["status", "seed", "overrides"]
    failed = JobResult(seed=1, metrics={}, error="DataError: no such file")
    assert list(failed.to_payload()) == ["status", "seed", "metrics", "error"]  # an empty section still says it ran


def test_credentials_never_reach_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    JobResult(config={"logger": {"api_key": "k-12345678"}}, overrides=["+logger.api_key=k-12345678"], status=FAILED,
              error="401 for token hf_abcdefghijklmnop").write(tmp_path)
    written = JobResult.read(tmp_path)
    assert written.config == {"logger": {"api_key": REDACTED}} and written.overrides == [f"+logger.api_key={REDACTED}"]
    assert written.error == f"401 for token {REDACTED}"


def test_a_partial_or_hand_edited_record_reads_with_what_it_has():
    result = JobResult.from_payload({"seed": "42", "config": [1], "overrides": "lora.r=4", "metrics": {"average": {"ndcg@10": 0.5}},
                                     "references": {"bm25": "n/a"}, "error": ""})
    assert (result.status, result.seed, result.config, result.overrides, result.error) == (UNKNOWN, None, None, None, None)
    assert result.average("ndcg@10") == 0.5 and math.isnan(result.average("mrr@10"))
    assert result.reference_rows == {} and result.datasets == [] and result.flat() == {"average/ndcg@10": 0.5}


def test_per_query_values_round_trip_through_the_job_folder(tmp_path):
    rows = {"trained": {"scifact": {"ndcg@10": {"q1": 0.5, "q2": 1.0}}}, "bm25": {"scifact": {"ndcg@10": {"q1": 0.25}}}}
    assert write_per_query(tmp_path, rows) == tmp_path / "per_query.json"
    assert read_per_query(tmp_path) == rows
    assert read_per_query(tmp_path / "elsewhere") == {}
    with pytest.raises(ValueError, match="rows"):
        write_per_query(tmp_path, {"tuned": {}})
