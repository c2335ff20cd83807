"""Injected faults: NaN losses and gradients, out-of-memory, a full disk, a kill mid-stage. Each ends in a
clear `failed` (or a logged, bounded skip), and never leaves an artefact that a rerun would trust."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM

import splade_peft.training.module as module_code
from tests.helpers import LORA, LOSS, OPTIM, REPO, tiny_tokenizer
from splade_peft.data.pairs import TrainingCollator
from splade_peft.errors import TrainingDivergedError, describe_failure
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.records import StageStore
from splade_peft.training.module import SpladeModule

pytestmark = pytest.mark.fault


def tiny_training(tmp_path, max_nonfinite_batches: int, steps: int = 6):
    """(trainer, module, loader): a LoRA SPLADE on a tiny random BERT, a few CPU steps."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    backbone = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    encoder = SpladeEncoder(wrap_with_adapter(backbone, LORA))
    items = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car on road"]}] * 16
    loader = DataLoader(items, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    return trainer, SpladeModule(encoder, LOSS, OPTIM, max_nonfinite_batches), loader


def nan_loss_on_calls(monkeypatch, calls: set[int]) -> None:
    real, count = module_code.ranking_loss, [0]

    def loss(*args, **kwargs):
        count[0] += 1
        terms = real(*args, **kwargs)
        return {**terms, "total": terms["total"] * float("nan")} if count[0] in calls else terms

    monkeypatch.setattr(module_code, "ranking_loss", loss)


def test_nan_losses_within_the_budget_are_skipped_and_logged(tmp_path, monkeypatch, caplog):
    nan_loss_on_calls(monkeypatch, {2, 3})
    trainer, module, loader = tiny_training(tmp_path, max_nonfinite_batches=2)
    trainer.fit(module, loader)
    assert trainer.global_step == 6 and module.nonfinite_batches == 2
    assert "non-finite loss at step 1: batch skipped (1 of at most 2)" in caplog.text
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_one_nan_loss_too_many_stops_training_naming_the_step(tmp_path, monkeypatch):
    nan_loss_on_calls(monkeypatch, {2, 3, 4})
    trainer, module, loader = tiny_training(tmp_path, max_nonfinite_batches=2)
    with pytest.raises(TrainingDivergedError, match="non-finite loss at step 3 "):
        trainer.fit(module, loader)


def test_a_nan_gradient_skips_the_update(tmp_path):
    trainer, module, loader = tiny_training(tmp_path, max_nonfinite_batches=1, steps=3)
    lora_b = next(p for name, p in module.named_parameters() if "lora_B" in name)
    calls = [0]

    def poison_second_backward(grad):
        calls[0] += 1
        return grad * float("nan") if calls[0] == 2 else grad

    lora_b.register_hook(poison_second_backward)
    trainer.fit(module, loader)
    assert module.nonfinite_batches == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_stage_that_dies_mid_write_is_never_trusted_and_is_redone(tmp_path):
    store = StageStore(tmp_path)

    def disk_full(folder: Path) -> dict:
        (folder / "vectors.jsonl").write_text('{"id": "d1", "vec')  # half a record, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "vectors.jsonl"))

    with pytest.raises(OSError):
        store.run("index", {"corpus": "abc"}, disk_full)
    assert not (tmp_path / "index").exists()

    def complete(folder: Path) -> dict:
        (folder / "vectors.jsonl").write_text('{"id": "d1", "vector": {}}\n')
        return {"documents": 1}

    folder, summary = store.run("index", {"corpus": "abc"}, complete)
    assert summary == {"documents": 1} and [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["index"]
    assert store.run("index", {"corpus": "abc"}, disk_full)[1] == summary  # complete: reused, not redone
    _, changed = store.run("index", {"corpus": "xyz"}, lambda f: {"documents": 2})
    assert changed == {"documents": 2}  # inputs changed: redone


@pytest.mark.parametrize(
    "error,expected",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory (OutOfMemoryError"),
        (MemoryError(), "out of memory (MemoryError"),
        (OSError(errno.ENOSPC, "No space left on device", "/runs/x/eval/index"), "disk full writing /runs/x/eval/index"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk full (Disk quota exceeded)"),
    ],
)
def test_resource_failures_are_named_with_their_fix(error, expected):
    assert describe_failure(error).startswith(expected) and " -- " in describe_failure(error)


# Runs the real entry point (a Hydra sweep over seeds) with faults injected per job.
FAULTY_SWEEP = """
import errno, os, runpy, torch
import splade_peft.training.module as module_code
import splade_peft.index.impact as impact

real_loss, real_write = module_code.ranking_loss, impact.write_vector_collection
seed = lambda: os.environ["PL_GLOBAL_SEED"]

def loss(*args, **kwargs):
    terms = real_loss(*args, **kwargs)
    return {**terms, "total": terms["total"] * float("nan")} if seed() == "1" else terms

def write_vectors(vectors, folder, shards):
    if seed() == "2":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if seed() == "3" and os.environ.get("DISK_FULL"):
        folder.mkdir(parents=True)
        (folder / "part0.jsonl").write_text('{"id": "d1", "vec')
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "part0.jsonl"))
    return real_write(vectors, folder, shards)

module_code.ranking_loss, impact.write_vector_collection = loss, write_vectors
runpy.run_module("splade_peft", run_name="__main__", alter_sys=True)
"""
SMALL_JOB = (
    "experiment=smoke", "eval.bm25=false", "eval.zero_shot=false", "data.negatives_source=random",
    "data.max_queries=8", "data.max_documents=40", "trainer.max_steps=2", "training.max_nonfinite_batches=1",
)


def run_sweep(sweep_dir: Path, seeds: str, *overrides: str, disk_full: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", FAULTY_SWEEP, "-m", f"hydra.sweep.dir={sweep_dir}", f"seed={seeds}", *SMALL_JOB,
         *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "DISK_FULL": "1" if disk_full else ""},
    )


@pytest.mark.slow
def test_faulty_jobs_fail_with_their_cause_and_the_sweep_goes_on(tmp_path):
    """seed=1: NaN loss every batch; seed=2: out of memory while encoding; seed=3: disk full while writing
    the index input, then the same command again once there is room."""
    first = run_sweep(tmp_path, "1,2,3", disk_full=True)
    assert first.returncode == 1 and "3 job(s) of the sweep did not complete" in first.stderr, first.stderr[-3000:]
    job = {seed: next(tmp_path.glob(f"*seed={seed},*")) for seed in (1, 2, 3)}
    results = {seed: json.loads((job[seed] / "results.json").read_text()) for seed in (1, 2, 3)}
    assert {seed: r["status"] for seed, r in results.items()} == {1: "failed", 2: "failed", 3: "failed"}
    assert "non-finite loss at step 1 " in results[1]["error"]
    assert results[2]["error"].startswith("out of memory")
    assert results[3]["error"].startswith("disk full writing")
    eval_dir = job[3] / "eval"
    # nothing half-done trusted: only hidden staging folders (and their locks), never a stage folder
    assert all(p.name.startswith(".") for p in eval_dir.iterdir())

    again = run_sweep(tmp_path, "3", "sweep.rerun_failed=true", disk_full=False)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((job[3] / "results.json").read_text())
    assert rerun["status"] == "completed" and rerun["training"]["steps"] == 2
    assert "resuming training from" in again.stdout + again.stderr  # training was not redone
