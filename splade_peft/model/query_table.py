"""Inference-free SPLADE's query side: a learned static weight per vocabulary token, no network at query time."""

from collections.abc import Iterable

import torch
from torch import nn


class QueryWeightTable(nn.Module):
    """A query's vector holds relu(table[t]) for every token t it contains (once, however often it occurs).

    Special tokens ([CLS], [SEP], padding) never get a weight: the tokenizer adds them to every query.
    """

    def __init__(self, initial_weights: torch.Tensor, special_token_ids: Iterable[int]):
        super().__init__()
        self.weights = nn.Parameter(initial_weights.clone().float())
        scorable = torch.ones_like(self.weights)
        scorable[list(special_token_ids)] = 0.0
        self.register_buffer("scorable", scorable)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(input_ids.shape[0], self.weights.shape[0], device=input_ids.device)
        counts.scatter_add_(1, input_ids, attention_mask.to(counts.dtype))
        return (counts > 0) * torch.relu(self.weights) * self.scorable


def idf_weights(tokenizer, texts: Iterable[str], max_length: int) -> torch.Tensor:
    """BM25's IDF, log(1 + (N - df + 0.5) / (df + 0.5)), of every vocabulary token over the tokenised texts.

    Tokens that never occur get the largest IDF: a query term absent from the corpus is the rarest.
    """
    document_frequency = torch.zeros(len(tokenizer), dtype=torch.float64)
    texts = list(texts)
    for token_ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]:
        document_frequency[sorted(set(token_ids))] += 1
    documents = len(texts)
    return torch.log1p((documents - document_frequency + 0.5) / (document_frequency + 0.5)).float()

