"""Suites as config and as a result: eval=local / beir13 / nanobeir compose into entries of one suite each;
a job's suite is the macro average of its datasets (each counted once) for every row, with a verdict per
dataset against zero-shot that counts improvements, significant losses and non-inferior datasets."""

import json
import random

import yaml

import pytest

from splade_peft.config import validate
from splade_peft.errors import SpladePeftError
from splade_peft.data.sources import load_eval_collections
from splade_peft.evaluation.suites import suite_summaries
from splade_peft.summary import verdict_line
from splade_peft.results import JobResult
from splade_peft.sweep.load import load_sweep
from splade_peft.sweep.significance import run_study
from splade_peft.sweep.table import study_table
from splade_peft.summary import format_table, summary_rows
from splade_peft.tracking import logged_values
from tests.helpers import composed, shared_collection

BEIR13 = {"trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020", "dbpedia-entity",
          "scidocs", "fever", "climate-fever", "scifact", "quora"}


@pytest.mark.parametrize("suite, members, self_retrieval", [
    ("beir13", BEIR13, {"arguana", "quora"}),
    ("nanobeir", 13, {"nano-arguana", "nano-quora"}),
    ("local", {"scifact", "cranfield"}, set()),
])
def test_a_suite_composes_into_entries_of_one_suite(suite, members, self_retrieval):
    cfg = composed(f"eval={suite}")
    validate(cfg)
    entries = {key: entry for key, entry in cfg.eval.datasets.items() if key != "in_domain"}
    assert {entry.suite for entry in entries.values()} == {suite} and "in_domain" in cfg.eval.datasets
    assert (set(entries) == members) if isinstance(members, set) else len(entries) == members
    assert {key for key, entry in entries.items() if entry.get("ignore_identical_ids")} == self_retrieval
    assert all((entry.get("query_max_length") or cfg.model.query_max_length) >= 256 for key, entry in entries.items()
               if "msmarco" not in key)  # not MS MARCO's 32 tokens


def test_an_unreachable_suite_dataset_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = composed("eval=beir13")
    with pytest.raises(SpladePeftError, match=r"^eval.datasets.trec-covid: could not load 'BeIR/trec-covid'.*"
                                              r"eval.datasets.trec-covid.source=beir") as refused:
        load_eval_collections({"trec-covid": cfg.eval.datasets["trec-covid"]}, "/tmp/splade-peft-test-cache")
    assert "\n" not in str(refused.value)


def test_the_local_suite_loads_its_members_lengths_and_rule():
    if not shared_collection("cranfield").is_dir():
        pytest.skip("../shared/data/cranfield is absent")
    cfg = composed("eval=local", "+eval.datasets.cranfield.ignore_identical_ids=true")
    loaded = load_eval_collections({"cranfield": cfg.eval.datasets.cranfield}, "/tmp/splade-peft-test-cache")
    assert loaded.suites == {"local": ["cranfield"]} and loaded.max_lengths == {"cranfield": (256, None)}
    assert loaded.collections["cranfield"].ignore_identical_ids


def per_query(rng, queries, shift):
    return {f"q{i}": min(1.0, max(0.0, rng.random() * 0.5 + shift)) for i in range(queries)}


def test_the_suite_average_counts_each_dataset_once_and_the_verdict_counts_datasets():
    rng = random.Random(0)
    control = {"a": per_query(rng, 200, 0.3), "b": per_query(rng, 200, 0.3), "c": per_query(rng, 20, 0.3),
               "d": per_query(rng, 100, 0.3)}
    spread = random.Random(1)
    noise = [spread.gauss(0, 0.04) for _ in control["d"]]
    noise = [v - sum(noise) / len(noise) for v in noise]  # a loss of exactly 0.0055 on average
    trained = {"a": {q: v + 0.1 for q, v in control["a"].items()},   # better on every query
               "b": {q: v - 0.05 for q, v in control["b"].items()},  # worse on every query: inferior at 0.01
               "c": dict(control["c"]),                              # the same: non-inferior
               "d": {q: v - 0.0055 + e for (q, v), e in zip(control["d"].items(), noise)}}  # a small loss, noisy
    per_query_values = {"trained": {d: {"ndcg@10": v} for d, v in trained.items()},
                        "zero_shot": {d: {"ndcg@10": v} for d, v in control.items()}}
    metrics = {d: {"ndcg@10": sum(v.values()) / len(v)} for d, v in trained.items()}
    summary = suite_summaries({"s": ["a", "b", "c", "d"]}, metrics, per_query_values, "ndcg@10", 0.01, "randomization")["s"]
    assert summary["metrics"]["ndcg@10"] == pytest.approx(sum(m["ndcg@10"] for m in metrics.values()) / 4)
    verdict = summary["verdict"]
    counts = ("improved", "worse", "non_inferior", "inferior", "inconclusive")
    assert tuple(verdict[key] for key in counts) == (1, 1, 2, 1, 1)
    per_dataset = verdict["per_dataset"]
    assert [per_dataset[d]["verdict"] for d in "abcd"] == ["non-inferior", "inferior", "non-inferior", "inconclusive"]
    assert per_dataset["b"]["upper_bound"] < -0.01 and per_dataset["d"]["upper_bound"] > -0.01 > per_dataset["d"]["lower_bound"]
    for entry in per_dataset.values():  # the interval and the p-value come from one test
        assert (entry["ci_low"] <= 0 <= entry["ci_high"]) == (entry["p"] >= 0.05)
    assert verdict_line("s", verdict).startswith("s: trained vs zero-shot ndcg@10 on 4 datasets: 1 significantly better, "
                                                 "1 significantly worse; at margin 0.01: 2 non-inferior, 1 inferior, 1 inconclusive")


RECORD = {
    "status": "completed", "data": {"eval": {"in": {}, "x": {}, "y": {}}},
    "metrics": {"in": {"ndcg@10": 0.7}, "x": {"ndcg@10": 0.2}, "y": {"ndcg@10": 0.4}, "average": {"ndcg@10": 0.433}},
    "references": {"zero_shot": {name: {"metrics": {"ndcg@10": value}} for name, value in (("in", 0.6), ("x", 0.3), ("y", 0.5))}},
    "suites": {"s": {"datasets": ["x", "y"], "metrics": {"ndcg@10": 0.3},
                     "verdict": {"metric": "ndcg@10", "test": "randomization, Holm", "margin": 0.01, "datasets": 2,
                                 "improved": 0, "worse": 2, "non_inferior": 0}}},
}


def test_the_suite_average_is_a_column_a_logged_value_and_a_row_of_the_job_table():
    result = JobResult.from_payload(RECORD)
    assert result.flat()["suite:s/ndcg@10"] == pytest.approx(0.3)
    assert logged_values(result)["reference/zero_shot/suite:s/ndcg@10"] == pytest.approx(0.4)
    assert [row[:3] for row in summary_rows(result) if row[0] == "s avg"] == [["s avg", "zero-shot", pytest.approx(0.4)],
                                                                           ["s avg", "trained", pytest.approx(0.3)]]
    table = format_table(result)
    assert "s: trained vs zero-shot ndcg@10 on 2 datasets: 0 significantly better, 2 significantly worse" in table


def test_the_sweep_table_shows_the_suite_beside_the_in_domain_dataset(tmp_path):
    for r, shift in ((1, 0.0), (8, 0.1)):
        folder = tmp_path / f"lora.r={r}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"lora.r={r}"]))
        record = json.loads(json.dumps(RECORD))
        record["overrides"] = [f"lora.r={r}"]
        for name in ("x", "y"):
            record["metrics"][name]["ndcg@10"] += shift
        (folder / "results.json").write_text(json.dumps(record))
    sweep = load_sweep(tmp_path)
    assert sweep.datasets == ["in", "x", "y"]
    headers, *rows = [line.strip("|").split(" | ") for line in study_table(sweep, run_study(sweep)).splitlines() if line.startswith("| ")]
    column = [header.strip() for header in headers].index("s avg nDCG@10")
    cells = {row[0].strip(): row[column].strip() for row in rows if not row[0].startswith(" ---")}
    assert cells["1"] == "0.300" and cells["8"] == "**0.400**" and cells["zero-shot (reference)"] == "0.400"


def write_beir_copy(folder, name: str) -> None:
    """A tiny BEIR-layout test set; in ArguAna and Quora a query is also a document, as in BEIR."""
    (folder / "qrels").mkdir(parents=True)
    docs = {f"{name}-d{i}": f"{name} document {i} about topic {i % 3}" for i in range(6)}
    queries = {f"{name}-q{i}": f"topic {i} {name}" for i in range(3)}
    if name in ("arguana", "quora"):
        docs[f"{name}-q0"] = queries[f"{name}-q0"]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                               + "".join(f"{name}-q{i}\t{name}-d{i}\t1\n" for i in range(3)))


def test_local_copies_stand_in_for_the_hub_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_beir_copy(tmp_path / "scifact", "scifact")
    cfg = composed("eval=beir13", f"eval.local_copies={tmp_path}")
    loaded = load_eval_collections({"scifact": cfg.eval.datasets.scifact}, "/tmp/splade-peft-test-cache", tmp_path)
    assert len(loaded.collections["scifact"].corpus) == 6 and loaded.suites == {"beir13": ["scifact"]}
    with pytest.raises(SpladePeftError, match=rf"^eval.datasets.nq: .*put a BEIR-layout copy at {tmp_path / 'nq'}"):
        load_eval_collections({"nq": cfg.eval.datasets.nq}, "/tmp/splade-peft-test-cache", tmp_path)


@pytest.mark.slow
def test_a_beir13_job_on_local_copies_prints_the_beir_average_over_13_datasets(tmp_path):
    from tests.helpers import run_cli

    for name in BEIR13:
        write_beir_copy(tmp_path / "beir" / name, name)
    done = run_cli(tmp_path / "job", "eval=beir13", f"eval.local_copies={tmp_path / 'beir'}", "lora=frozen", "model=tiny",
                   "index=exact", "eval.bm25=false", "logger=none", f"paths.cache={tmp_path / 'cache'}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "job" / "results.json").read_text())
    suite = result["suites"]["beir13"]
    assert set(suite["datasets"]) == BEIR13 and 0 <= suite["metrics"]["ndcg@10"] <= 1
    assert "beir13 avg" in done.stdout + done.stderr
