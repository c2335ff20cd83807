"""One set of row labels: the job's summary table and the sweep report name the reference rows alike."""

import json

import yaml

from splade_peft.labels import REFERENCE_LABELS, TRAINED
from splade_peft.results import REFERENCE_SYSTEMS, JobResult
from splade_peft.summary import summary_rows
from splade_peft.sweep import load_sweep


def test_every_reference_system_has_a_label():
    assert set(REFERENCE_LABELS) == set(REFERENCE_SYSTEMS)


def test_the_summary_and_the_sweep_report_label_the_rows_alike(tmp_path):
    metrics = {"scifact": {"ndcg@10": 0.5}}
    record = {"status": "completed", "overrides": ["lora.r=4"], "metrics": {**metrics, "average": {"ndcg@10": 0.5}},
              "references": {system: {"scifact": {"metrics": {"ndcg@10": 0.4}}} for system in REFERENCE_SYSTEMS}}
    folder = tmp_path / "lora.r=4"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["lora.r=4"]))
    (folder / "results.json").write_text(json.dumps(record))
    summary = [row[1] for row in summary_rows(JobResult.from_payload(record))]
    assert summary == [*REFERENCE_LABELS.values(), TRAINED]
    assert list(load_sweep(tmp_path).references.index) == list(REFERENCE_LABELS.values())
