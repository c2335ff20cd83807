"""Sharded corpus encoding: the same index as one pass, complete shards kept, stale shards removed, and the
same vectors however the shards are launched (precision is part of every shard's settings and fingerprint)."""

import contextlib
import json
import os
import random

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM

from splade_peft.index.sparsity import SparsityCounter
from splade_peft.index import sharded
from splade_peft.index.encode import encode_texts, encoded_batches
from splade_peft.index.impact import build_impact_index, quantize, write_vector_collection
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.variants import as_sparse_encoder
from splade_peft.search.lucene import impact_search
from tests.helpers import WORDS


def index_cfg(shards: int, processes: int = 1, launcher: str = "local", submitit: dict | None = None):
    return OmegaConf.create({"quantization": 100, "tokens_per_batch": 64, "max_batch_size": 4, "encode_shards": shards,
                             "encode_processes": processes, "shard_launcher": launcher, "submitit": submitit or {}})


@pytest.fixture(scope="module")
def documents_side(tokenizer):
    torch.manual_seed(0)
    masked_lm = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=64))
    return as_sparse_encoder(SpladeEncoder(masked_lm.eval())).side("documents")


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    return {f"d{i}": " ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for i in range(40)}


def vector_records(folder) -> dict:
    return {record["id"]: record["vector"] for path in sorted(folder.rglob("*.jsonl"))
            for record in map(json.loads, path.read_text().splitlines())}


def test_two_processes_build_the_same_index_as_one_pass_and_as_in_process_shards(tmp_path, documents_side, tokenizer, corpus):
    one_pass = SparsityCounter()
    vectors = ((doc_id, one_pass.add(impacts) or impacts) for doc_id, impacts in
               ((d, quantize(v, 100)) for d, v in encode_texts(documents_side, tokenizer, corpus, 16, 64, 4)))
    written = write_vector_collection(vectors, tmp_path / "one" / "vectors", shards=2)
    documents, counter = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3, processes=2), 16,
                                                       tmp_path / "sharded", "32-true")
    sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3), 16, tmp_path / "in_process", "32-true")
    for shard in (f"shard-0000{index}.jsonl" for index in range(3)):  # in-process and spawned shards: same bytes
        spawned = (tmp_path / "sharded" / "vectors" / shard).read_bytes()
        assert spawned and spawned == (tmp_path / "in_process" / "vectors" / shard).read_bytes()

    assert documents == written == len(vector_records(tmp_path / "sharded" / "vectors"))
    assert vector_records(tmp_path / "sharded" / "vectors") == vector_records(tmp_path / "one" / "vectors")
    assert sorted(counter.lengths) == sorted(one_pass.lengths) and counter.term_frequency == one_pass.term_frequency
    stats = [build_impact_index(tmp_path / name / "vectors", tmp_path / name / "index", threads=2)
             for name in ("one", "sharded")]
    assert stats[0].documents == stats[1].documents == written
    queries = {f"q{i}": {word: 1 + i % 3 for word in WORDS[i:i + 3]} for i in range(10)}
    runs = [impact_search(tmp_path / name / "index", queries, k=10, threads=1) for name in ("one", "sharded")]
    assert runs[0] == runs[1] and any(runs[0].values())


def test_complete_shards_are_kept_and_stale_ones_removed(tmp_path, documents_side, tokenizer, corpus, monkeypatch):
    encoded = []
    monkeypatch.setattr(sharded, "encoded_batches", lambda encoder, tokenizer, texts, *args: (
        encoded.append(len(texts)) or encoded_batches(encoder, tokenizer, texts, *args)))
    first = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3), 16, tmp_path, "32-true")
    assert len(encoded) == 3
    (tmp_path / "stages" / "shard-00001" / "_complete.json").unlink()  # as if killed before its marker
    again = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3), 16, tmp_path, "32-true")
    assert len(encoded) == 4 and again[0] == first[0] and again[1].lengths == first[1].lengths

    sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(2), 16, tmp_path, "32-true")
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert set(vector_records(tmp_path / "vectors")) == set(corpus)


def shard_inputs(documents_side, tokenizer, corpus, tmp_path, precision: str) -> list[dict]:
    settings = sharded.EncodeSettings(16, 64, 4, 100, precision)
    return [job.inputs for job in sharded.shard_jobs(documents_side, tokenizer, corpus, settings, tmp_path, 2)]


def test_a_shard_encoded_at_one_precision_is_not_reused_at_another(tmp_path, documents_side, tokenizer, corpus):
    full = shard_inputs(documents_side, tokenizer, corpus, tmp_path, "32-true")
    mixed = shard_inputs(documents_side, tokenizer, corpus, tmp_path, "bf16-mixed")
    assert full == shard_inputs(documents_side, tokenizer, corpus, tmp_path, "32-true")
    assert all(a != b and a["settings"]["precision"] != b["settings"]["precision"] for a, b in zip(full, mixed))


def test_every_launcher_encodes_under_the_settings_precision(tmp_path, documents_side, tokenizer, corpus, monkeypatch):
    # On CUDA the precision is bf16 autocast (device.inference_precision); here: that each shard asks for it.
    asked = []

    def recorded_precision(trainer_cfg, device):
        asked.append((trainer_cfg["precision"], device.type))
        return contextlib.nullcontext()

    monkeypatch.setattr(sharded, "inference_precision", recorded_precision)
    sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(2), 16, tmp_path, "bf16-mixed")
    assert asked == [("bf16-mixed", "cpu")] * 2


def test_nested_submitit_submission_hides_the_outer_slurm_job(tmp_path, documents_side, tokenizer, corpus, monkeypatch):
    import submitit

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    seen = []
    submit = submitit.AutoExecutor.map_array

    def recording_map_array(executor, function, *iterables):
        seen.append({key: os.environ.get(key) for key in ("SLURM_JOB_ID", "SLURM_NTASKS")})
        return submit(executor, function, *iterables)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", recording_map_array)
    cfg = index_cfg(2, launcher="submitit", submitit={"cluster": "debug"})
    documents, _ = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, cfg, 16, tmp_path, "32-true")
    assert documents == len(vector_records(tmp_path / "vectors"))
    assert seen == [{"SLURM_JOB_ID": None, "SLURM_NTASKS": None}]
    assert os.environ["SLURM_JOB_ID"] == "4242"  # restored for the rest of the job
