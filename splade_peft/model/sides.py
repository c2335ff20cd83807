"""What every encoder family (SPLADE variants, dense, CSR) shares: one side of a two-sided retriever as a module
(what text encoding and validation call), and the fingerprint of the parameters it keeps outside its LMs."""

import hashlib
from collections.abc import Mapping

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


def parameters_fingerprint(parameters: Mapping[str, torch.Tensor]) -> str:
    """Hash of named parameters' values: what caches keyed on an encoder's own parameters (zero-shot rows) compare."""
    digest = hashlib.sha256()
    for name, parameter in sorted(parameters.items()):
        digest.update(name.encode() + parameter.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
