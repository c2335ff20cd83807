"""Evaluation-only jobs on a collection with nothing but a test split: the checkpoint as it is (lora=frozen),
a job's saved adapter (model.adapter=<run_dir>) and the same adapter exported (model.adapter=<exported>)."""

import json
import random

import pytest
import torch

from tests.helpers import REPO, WORDS, composed, run_cli
from splade_peft.export import export
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.backbones import load_backbone
from splade_peft.model.variants import build_encoder

pytestmark = pytest.mark.slow
SMOKE = ["experiment=smoke", "logger=csv", "eval.bm25=false"]


def write_test_only_beir(folder) -> None:
    """corpus.jsonl, queries.jsonl and qrels/test.tsv: no training split at all."""
    rng = random.Random(0)
    (folder / "qrels").mkdir(parents=True)
    documents = [" ".join(rng.choices(WORDS, k=12)) for _ in range(60)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n"
                                                 for i, text in enumerate(documents)))
    queries = {f"q{i}": " ".join(documents[3 * i].split()[:3]) for i in range(12)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{3 * i}\t1\n" for i in range(12)))


def save_adapter_like_a_job(run_dir) -> None:
    """A LoRA on the smoke preset's tiny model, moved away from its initial values, saved as a job saves it."""
    cfg = composed(*SMOKE)
    masked_lm, tokenizer = load_backbone(cfg.model, REPO / ".cache")
    torch.manual_seed(0)
    encoder = build_encoder(cfg.encoder, masked_lm, tokenizer, {}, cfg.model.doc_max_length,
                            adapt=lambda lm: wrap_with_adapter(lm, cfg.lora))
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if "lora_B" in name:
                parameter.add_(torch.randn_like(parameter))
    encoder.save(run_dir / "adapter")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_only")
    write_test_only_beir(root / "beir")
    save_adapter_like_a_job(root / "trained")
    export(root / "trained", root / "exported")
    data = ["data=beir", f"data.path={root / 'beir'}", "lora=frozen"]
    runs = {"frozen": [], "adapter": [f"model.adapter={root / 'trained'}"], "exported": [f"model.adapter={root / 'exported'}"]}
    completed = {name: run_cli(root / name, *SMOKE, *data, *extra) for name, extra in runs.items()}
    return {name: (process, root / name) for name, process in completed.items()}


def results(jobs, name) -> dict:
    process, run_dir = jobs[name]
    assert process.returncode == 0, process.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["training"]["steps"] == 0
    return record


def test_the_frozen_checkpoint_is_evaluated_without_a_training_split(jobs):
    record = results(jobs, "frozen")
    assert "train" not in record["data"]
    assert record["sparsity"]["beir"] == record["references"]["zero_shot"]["beir"]["sparsity"]
    assert record["metrics"]["beir"] == record["references"]["zero_shot"]["beir"]["metrics"]
    assert not (jobs["frozen"][1] / "eval").exists()  # the zero-shot row's encoding is the trained row's: done once


def test_a_saved_adapter_is_evaluated_on_its_base(jobs):
    record = results(jobs, "adapter")
    assert record["sparsity"]["beir"] != record["references"]["zero_shot"]["beir"]["sparsity"]  # the adapter is on


def test_the_exported_folder_evaluates_as_the_adapter_does(jobs):
    adapter, exported = results(jobs, "adapter"), results(jobs, "exported")
    assert exported["sparsity"]["beir"]["doc_nnz_mean"] == pytest.approx(adapter["sparsity"]["beir"]["doc_nnz_mean"], rel=0.01)
    assert exported["metrics"]["beir"]["ndcg@10"] == pytest.approx(adapter["metrics"]["beir"]["ndcg@10"], abs=0.02)


def test_a_saved_adapter_with_a_trainable_method_is_refused(tmp_path, jobs):
    root = jobs["adapter"][1].parent
    completed = run_cli(tmp_path, *SMOKE, "data=beir", f"data.path={root / 'beir'}", f"model.adapter={root / 'trained'}")
    assert completed.returncode != 0
    assert "model.adapter" in completed.stderr and "lora=frozen" in completed.stderr
