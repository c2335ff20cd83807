"""The SPLADE encoder: token weights log(1 + relu(mlm_logits)), pooled over the non-padding tokens."""

import torch
from torch import nn

from splade_peft.errors import ConfigError

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
        logits = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
        return splade_pool(logits, attention_mask, self.pooling)


def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    padding = ~attention_mask.bool().unsqueeze(-1)
    if pooling == "max":
        # log1p and relu are monotone, so the max over tokens can be taken first: one (batch, vocab)
        # activation instead of a (batch, length, vocab) one, with identical values and gradients.
        return torch.log1p(torch.relu(logits.masked_fill(padding, float("-inf")).amax(dim=1)))
    return torch.log1p(torch.relu(logits)).masked_fill(padding, 0.0).sum(dim=1)
