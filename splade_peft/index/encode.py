"""Encode texts into sparse {term: weight} vectors: no grad, length-sorted batches under a token budget."""

from collections.abc import Iterator, Mapping
from itertools import islice

import torch

from splade_peft.model.encoder import SpladeEncoder

# Texts tokenised at a time: large enough that length sorting still removes most padding.
CHUNK = 16_384


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


@torch.inference_mode()
def encode_texts(
    encoder: SpladeEncoder,
    tokenizer,
    texts: Mapping[str, str],
    max_length: int,
    tokens_per_batch: int = 8192,
    max_batch_size: int = 64,
) -> Iterator[tuple[str, dict[str, float]]]:
    """Yield (id, {term: weight}) for every text, in length order within chunks of `CHUNK` texts; weights are
    the encoder's, unquantised. Tokenised a chunk at a time, so memory does not grow with the corpus.
    Terms are the tokenizer's vocabulary unless the encoder names its own dimensions (CSR's latents)."""
    terms = getattr(encoder, "term_names", None) or vocabulary_terms(tokenizer)
    device = next(encoder.parameters()).device
    encoder.eval()
    remaining = iter(texts)
    while ids := list(islice(remaining, CHUNK)):
        token_ids = tokenizer([texts[i] for i in ids], truncation=True, max_length=max_length)["input_ids"]
        for batch in length_sorted_batches([len(t) for t in token_ids], tokens_per_batch, max_batch_size):
            padded = tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt")
            weights = encoder(padded["input_ids"].to(device), padded["attention_mask"].to(device)).float().cpu()
            for row, index in enumerate(batch):
                yield ids[index], term_weights(weights[row], terms)


def term_weights(weights: torch.Tensor, terms: list[str]) -> dict[str, float]:
    """{term: weight} for the nonzero entries of one vocabulary-sized vector."""
    nonzero = weights.nonzero().squeeze(1).tolist()
    return {terms[t]: w for t, w in zip(nonzero, weights[nonzero].tolist())}
