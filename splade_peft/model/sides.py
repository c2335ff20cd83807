"""One side of a two-sided retriever as a module: what text encoding (index/encode.py) and validation call."""

import torch
from torch import nn


class EncoderSide(nn.Module):
    """forward(input_ids, attention_mask) encodes `name` ('queries' or 'documents') with `encoder`."""

    def __init__(self, encoder: nn.Module, name: str):
        super().__init__()
        self.encoder, self.name = encoder, name

    @property
    def term_names(self) -> list[str] | None:
        """The names of the output dimensions when they are not the tokenizer's vocabulary (CSR's latents)."""
        return getattr(self.encoder, "term_names", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        encode = self.encoder.encode_queries if self.name == "queries" else self.encoder.encode_documents
        return encode(input_ids=input_ids, attention_mask=attention_mask)
