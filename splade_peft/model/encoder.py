"""The SPLADE encoder: token weights log(1 + relu(mlm_logits)), pooled over the non-padding tokens."""

from contextlib import contextmanager

import torch
from torch import nn

from splade_peft.errors import ConfigError
from splade_peft.model.projection import MaskedMaxProjection

POOLINGS = ("max", "sum")


class SpladeEncoder(nn.Module):
    """One encoder shared by queries and documents; returns a (batch, vocab) non-negative weight matrix."""

    def __init__(self, masked_lm: nn.Module, pooling: str = "max"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError("encoder.pooling", f"unknown pooling '{pooling}'", f"use one of {', '.join(POOLINGS)}")
        self.masked_lm = masked_lm
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "sum":
            logits = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
            return torch.log1p(torch.relu(logits)).masked_fill(~attention_mask.bool().unsqueeze(-1), 0.0).sum(dim=1)
        projection = self.masked_lm.get_output_embeddings()
        with vocabulary_projection_skipped(projection):
            hidden = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.log1p(torch.relu(MaskedMaxProjection.apply(hidden, projection.weight, projection.bias, attention_mask)))


@contextmanager
def vocabulary_projection_skipped(projection: nn.Module):
    """Make the masked LM return the input of its vocabulary projection (the transformed hidden states).

    The projection is applied by MaskedMaxProjection instead; the module itself (weights, tying,
    state dict) is untouched: only this instance's forward is shadowed for the duration.
    """
    projection.forward = lambda hidden: hidden
    try:
        yield
    finally:
        del projection.forward
