"""Corpus encoding: non-zeros found and quantised where the encoder runs give exactly the impacts of the
per-document reference (dense block on the host, a dict per document, Python's quantize), and the vector
files are written by a background thread whose failures reach the caller."""

import random
import threading
import time

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from splade_peft.errors import IndexingError
from splade_peft.index.encode import (dimension_names, encoded_batches, length_sorted_batches, nonzero_entries,
                                      term_weights)
from splade_peft.index.impact import (consumed_in_background, quantize, read_vector_collection, write_impact_batches,
                                      write_vector_collection)
from splade_peft.index.sparsity import SparsityCounter
from splade_peft.model.encoder import SpladeEncoder
from tests.helpers import WORDS


class SilentOnShortTexts(nn.Module):
    """A SPLADE encoder whose vectors are empty for texts of under `min_tokens` tokens: empty vectors on demand."""

    def __init__(self, encoder: nn.Module, min_tokens: int):
        super().__init__()
        self.encoder, self.min_tokens = encoder, min_tokens

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        long_enough = attention_mask.sum(dim=1, keepdim=True) >= self.min_tokens
        return self.encoder(input_ids, attention_mask) * long_enough


@pytest.fixture(scope="module")
def encoder(tokenizer):
    torch.manual_seed(0)
    masked_lm = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=64))
    return SilentOnShortTexts(SpladeEncoder(masked_lm.eval()), min_tokens=5).eval()


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(1)
    return {f"d{i}": " ".join(rng.choices(WORDS, k=rng.randint(1, 14))) for i in range(50)}


@torch.inference_mode()
def reference_impacts(encoder, tokenizer, texts, max_length, tokens_per_batch, max_batch_size, factor) -> dict:
    """The path before the device-side extraction: each batch's dense block on the host, a dict per document."""
    terms = dimension_names(encoder, tokenizer)
    ids = list(texts)
    token_ids = tokenizer([texts[i] for i in ids], truncation=True, max_length=max_length)["input_ids"]
    impacts = {}
    for batch in length_sorted_batches([len(t) for t in token_ids], tokens_per_batch, max_batch_size):
        padded = tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt")
        weights = encoder(padded["input_ids"], padded["attention_mask"]).float().cpu()
        for row, index in enumerate(batch):
            impacts[ids[index]] = quantize(term_weights(weights[row], terms), factor)
    return impacts


def device_impacts(encoder, tokenizer, texts, *settings) -> dict:
    terms = dimension_names(encoder, tokenizer)
    return {doc_id: vector for batch in encoded_batches(encoder, tokenizer, texts, *settings)
            for doc_id, vector in batch.vectors(terms)}


@pytest.mark.parametrize("factor", [100, 37.5])
def test_device_side_impacts_equal_the_per_document_reference(encoder, tokenizer, corpus, factor):
    settings = (16, 48, 4, factor)
    expected = reference_impacts(encoder, tokenizer, corpus, *settings)
    got = device_impacts(encoder, tokenizer, corpus, *settings)
    assert got == expected
    assert [list(vector) for vector in got.values()] == [list(expected[d]) for d in got]  # term order too
    empty = [doc_id for doc_id, vector in got.items() if not vector]
    assert empty and len(empty) < len(corpus)  # both kinds of vector occur
    assert all(type(weight) is int for vector in got.values() for weight in vector.values())


def test_quantisation_rounds_the_float64_product_as_python_does():
    # 0.015f x 100 is 1.4999999664... in float64 (rounds to 1) but exactly 1.5 in float32 (rounds to 2);
    # 0.125 x 100 = 12.5 rounds half to even; 0.004 x 100 rounds to 0 and is dropped, as are negatives.
    weights = torch.tensor([[0.015, 0.025, 0.125, 0.375, 0.004, -0.3, 0.0, 3.0], [0.0] * 8])
    rows, columns, values = nonzero_entries(weights, 100)
    expected = quantize(dict(enumerate(weights[0].tolist())), 100)
    assert dict(zip(columns.tolist(), values.tolist())) == expected == {0: 1, 1: 3, 2: 12, 3: 38, 7: 300}
    assert rows.tolist() == [0] * 5


def test_unquantised_entries_keep_the_encoders_float_weights():
    weights = torch.tensor([[0.0, 0.1, 2.5], [0.3, 0.0, 0.0]])
    rows, columns, values = nonzero_entries(weights, None)
    assert (rows.tolist(), columns.tolist()) == ([0, 0, 1], [1, 2, 0])
    assert values.tolist() == [weights[0, 1].item(), 2.5, weights[1, 0].item()]


def test_non_finite_weights_are_refused_in_one_line():
    with pytest.raises(IndexingError, match="non-finite"):
        nonzero_entries(torch.tensor([[0.2, float("nan")]]), 100)


def test_background_writer_writes_the_reference_files_and_counts(encoder, tokenizer, corpus, tmp_path):
    settings = (16, 48, 4, 100)
    expected = reference_impacts(encoder, tokenizer, corpus, *settings)
    reference_count = SparsityCounter().add_all(expected.values())
    written_before = write_vector_collection(expected.items(), tmp_path / "reference", shards=2)
    counter = SparsityCounter()
    written = write_impact_batches(encoded_batches(encoder, tokenizer, corpus, *settings),
                                   dimension_names(encoder, tokenizer), tmp_path / "new", 2, counter)
    assert written == written_before == sum(1 for vector in expected.values() if vector)
    for part in ("part-00000.jsonl", "part-00001.jsonl"):
        assert (tmp_path / "new" / part).read_bytes() == (tmp_path / "reference" / part).read_bytes()
    assert counter.lengths == reference_count.lengths and counter.term_frequency == reference_count.term_frequency
    assert dict(read_vector_collection(tmp_path / "new")) == {d: v for d, v in expected.items() if v}


def test_a_writer_failure_stops_the_producer_and_reaches_the_caller():
    produced = []

    def items():
        for index in range(1000):
            produced.append(index)
            yield index

    def consume(received):
        for index in received:
            if index == 3:
                raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        consumed_in_background(items(), consume, depth=2)
    assert len(produced) < 10


def test_a_producer_failure_unwinds_the_writer_and_publishes_nothing(tmp_path):
    def documents():
        yield "d1", {"cat": 3}
        raise RuntimeError("CUDA error")

    with pytest.raises(RuntimeError, match="CUDA error"):
        consumed_in_background(documents(), lambda received: write_vector_collection(received, tmp_path / "v", 1))
    assert not (tmp_path / "v").exists() and not list(tmp_path.iterdir())


def test_the_queue_bounds_how_far_the_producer_runs_ahead():
    produced, lead = [], []

    def items():
        for index in range(40):
            produced.append(index)
            yield index

    def consume(received):
        for index in received:
            if index == 0:
                time.sleep(0.5)  # a slow write: the producer fills the queue meanwhile
            lead.append(len(produced) - index)
        return len(lead)

    assert consumed_in_background(items(), consume, depth=3) == 40
    assert max(lead) <= 3 + 2  # the queue, the item being put, the item being written


def test_the_next_batch_is_produced_while_the_writer_works_on_the_last():
    second_produced = threading.Event()

    def items():
        yield 0
        second_produced.set()
        yield 1

    def consume(received):
        # In series the producer could not make item 1 before item 0 is written: this wait would time out.
        return [second_produced.wait(timeout=10) for _ in received]

    assert consumed_in_background(items(), consume) == [True, True]
