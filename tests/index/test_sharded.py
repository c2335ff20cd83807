"""Sharded corpus encoding: the same index as one pass, complete shards kept, stale shards removed."""

import json
import random

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM

from splade_peft.index.sparsity import SparsityCounter
from splade_peft.index import sharded
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import build_impact_index, quantize, write_vector_collection
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.variants import as_sparse_encoder
from splade_peft.search.lucene import impact_search
from tests.helpers import WORDS


def index_cfg(shards: int, processes: int = 1):
    return OmegaConf.create({"quantization": 100, "tokens_per_batch": 64, "max_batch_size": 4, "encode_shards": shards,
                             "encode_processes": processes, "shard_launcher": "local", "submitit": {}})


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


def test_two_processes_build_the_same_index_as_one_pass(tmp_path, documents_side, tokenizer, corpus):
    one_pass = SparsityCounter()
    vectors = ((doc_id, one_pass.add(impacts) or impacts) for doc_id, impacts in
               ((d, quantize(v, 100)) for d, v in encode_texts(documents_side, tokenizer, corpus, 16, 64, 4)))
    written = write_vector_collection(vectors, tmp_path / "one" / "vectors", shards=2)
    documents, counter = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3, processes=2), 16,
                                                       tmp_path / "sharded")

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
    monkeypatch.setattr(sharded, "encode_texts", lambda encoder, tokenizer, texts, *args: (
        encoded.append(len(texts)) or encode_texts(encoder, tokenizer, texts, *args)))
    first = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3), 16, tmp_path)
    assert len(encoded) == 3
    (tmp_path / "stages" / "shard-00001" / "_complete.json").unlink()  # as if killed before its marker
    again = sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(3), 16, tmp_path)
    assert len(encoded) == 4 and again[0] == first[0] and again[1].lengths == first[1].lengths

    sharded.encode_corpus_sharded(documents_side, tokenizer, corpus, index_cfg(2), 16, tmp_path)
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert set(vector_records(tmp_path / "vectors")) == set(corpus)
