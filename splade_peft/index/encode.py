"""Encode texts into sparse vectors: no grad, length-sorted batches under a token budget. Each batch's non-zero
entries are found (and quantised) on the encoder's device and come to the host in one copy: the dense
(batch, vocabulary) block never leaves the device, and no per-document work runs between two batches."""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch

from splade_peft.errors import IndexingError
from splade_peft.model.encoder import SpladeEncoder

# Texts tokenised at a time: large enough that length sorting still removes most padding.
CHUNK = 16_384
# index.max_batch_size's default where a caller has no index section (teacher scoring, mining, the benchmarks).
MAX_BATCH_SIZE = 64


@dataclass(frozen=True)
class SparseBatch:
    """A batch of encoded texts as its non-zero entries, on the host, ordered by text and then by dimension:
    entry j is dimension columns[j] of text ids[rows[j]], weight values[j] (float, or int impacts)."""

    ids: list[str]
    rows: np.ndarray
    columns: np.ndarray
    values: np.ndarray

    def vectors(self, terms: Sequence[str]) -> Iterator[tuple[str, dict]]:
        """(id, {term: value}) of every text in the batch, in batch order; texts without entries give {}."""
        bounds = np.searchsorted(self.rows, np.arange(len(self.ids) + 1)).tolist()
        columns, values = self.columns.tolist(), self.values.tolist()
        for row, text_id in enumerate(self.ids):
            start, end = bounds[row], bounds[row + 1]
            yield text_id, {terms[column]: value for column, value in zip(columns[start:end], values[start:end])}


def length_sorted_batches(lengths: list[int], tokens_per_batch: int, max_batch_size: int) -> Iterator[list[int]]:
    """Indices grouped longest-first so that padding is minimal and each batch's padded size stays bounded."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for index in order:
        padded_length = lengths[batch[0]] if batch else lengths[index]
        if batch and (len(batch) + 1 > max_batch_size or (len(batch) + 1) * padded_length > tokens_per_batch):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def vocabulary_terms(tokenizer) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def dimension_names(encoder, tokenizer) -> list[str]:
    """The term of each output dimension: the tokenizer's vocabulary unless the encoder names its own (CSR's latents)."""
    return getattr(encoder, "term_names", None) or vocabulary_terms(tokenizer)


@torch.inference_mode()
def encoded_batches(encoder: SpladeEncoder, tokenizer, texts: Mapping[str, str], max_length: int,
                    tokens_per_batch: int = 8192, max_batch_size: int = MAX_BATCH_SIZE,
                    quantization: float | None = None) -> Iterator[SparseBatch]:
    """Every text's non-zero weights, a batch at a time, in length order within chunks of `CHUNK` texts;
    with `quantization`, the positive integer impacts of impact.quantize instead. Tokenised a chunk at a
    time, so memory does not grow with the corpus."""
    device = next(encoder.parameters()).device
    encoder.eval()
    remaining = iter(texts)
    while ids := list(islice(remaining, CHUNK)):
        token_ids = tokenizer([texts[i] for i in ids], truncation=True, max_length=max_length)["input_ids"]
        for batch in length_sorted_batches([len(t) for t in token_ids], tokens_per_batch, max_batch_size):
            padded = tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt")
            weights = encoder(padded["input_ids"].to(device), padded["attention_mask"].to(device))
            yield SparseBatch([ids[i] for i in batch], *nonzero_entries(weights, quantization))


def nonzero_entries(weights: torch.Tensor, quantization: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, values) of a (batch, dimensions) matrix's non-zero entries, computed where the matrix is
    and copied to the host at once; with `quantization`, only entries whose impact is positive, as int impacts."""
    rows, columns = weights.nonzero(as_tuple=True)
    # float64 holds every bf16/fp32 weight and every index exactly, so one tensor carries all three in one copy;
    # and the impact is computed as impact.quantize computes it in Python: double product, round half to even.
    values = weights[rows, columns].double()
    if quantization is not None:
        values = torch.round(values * quantization)
        kept = (values > 0) | ~torch.isfinite(values)  # non-finite ones come along to be refused below
        rows, columns, values = rows[kept], columns[kept], values[kept]
    entries = torch.stack([rows.double(), columns.double(), values]).cpu().numpy()
    rows, columns, values = entries[0].astype(np.int64), entries[1].astype(np.int64), entries[2]
    return rows, columns, values if quantization is None else finite_impacts(values)


def finite_impacts(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise IndexingError("the encoder produced non-finite weights (NaN or inf), which have no integer impact "
                            "-- its training diverged: evaluate an earlier checkpoint or lower optim.lr")
    return values.astype(np.int64)


def encode_texts(encoder: SpladeEncoder, tokenizer, texts: Mapping[str, str], max_length: int,
                 tokens_per_batch: int = 8192, max_batch_size: int = MAX_BATCH_SIZE) -> Iterator[tuple[str, dict[str, float]]]:
    """Yield (id, {term: weight}) for every text, in encoded_batches' order; weights are the encoder's, unquantised."""
    terms = dimension_names(encoder, tokenizer)
    for batch in encoded_batches(encoder, tokenizer, texts, max_length, tokens_per_batch, max_batch_size):
        yield from batch.vectors(terms)


def term_weights(weights: torch.Tensor, terms: list[str]) -> dict[str, float]:
    """{term: weight} for the nonzero entries of one vocabulary-sized vector."""
    nonzero = weights.nonzero().squeeze(1).tolist()
    return {terms[t]: w for t, w in zip(nonzero, weights[nonzero].tolist())}
