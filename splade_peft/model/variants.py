"""SPLADE encoder variants (the `encoder=` group): how queries and documents become sparse vocabulary vectors.

- splade: one adapted LM for both sides (pooling max or sum);
- splade_separate: a query LM and a document LM, copies of the same backbone, each with its own adapter;
- inference_free: documents through the adapted LM, queries through a learned per-token table
  initialised from IDF over the training corpus (no network at query time, no query regulariser).

Every variant applies its own sparsifier to each side's vectors (see sparsifiers.py).
"""

import copy
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from splade_peft.errors import ConfigError
from splade_peft.model.adapters import save_adapter
from splade_peft.model.config import EMBEDDING_FAMILIES, ENCODER_VARIANTS
from splade_peft.model.csr import build_csr_encoder
from splade_peft.model.decoders import make_bidirectional
from splade_peft.model.dense import build_dense_encoder
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.query_table import QueryWeightTable, idf_weights
from splade_peft.model.sides import EncoderSide, parameters_fingerprint
from splade_peft.model.sparsifiers import build_sparsifier

# What SparseEncoder.save writes besides the LM adapter(s): the query table and learned sparsifier values.
OWN_PARAMETERS_FILE = "encoder_parameters.safetensors"
QUERY_LM_FOLDER = "query_encoder"


class SparseEncoder(nn.Module):
    """encode_queries / encode_documents: token ids -> (batch, vocab) non-negative weights, each side sparsified."""

    is_sparse = True

    def __init__(self, query_encoder: nn.Module, document_encoder: SpladeEncoder,
                 query_sparsifier: nn.Module | None = None, document_sparsifier: nn.Module | None = None):
        super().__init__()
        self.query_encoder, self.document_encoder = query_encoder, document_encoder
        self.query_sparsifier = query_sparsifier or nn.Identity()
        self.document_sparsifier = document_sparsifier or nn.Identity()

    def encode_queries(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.query_sparsifier(self.query_encoder(input_ids=input_ids, attention_mask=attention_mask))

    def encode_documents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.document_sparsifier(self.document_encoder(input_ids=input_ids, attention_mask=attention_mask))

    @property
    def masked_lm(self) -> nn.Module:
        """The document side's (adapted) LM: the shared one for splade."""
        return self.document_encoder.masked_lm

    @property
    def regularise_queries(self) -> bool:
        """A static query table has no query encoder to make sparse: its regulariser is 0 (research notes, 7)."""
        return not isinstance(self.query_encoder, QueryWeightTable)

    def side(self, name: str) -> nn.Module:
        """A module whose forward(input_ids, attention_mask) encodes `name` ('queries' or 'documents')."""
        return EncoderSide(self, name)

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """Training losses beside the ranking loss and regularisers: none (CSR has its reconstruction)."""
        return {}

    def own_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters outside the LMs: the query table and learned sparsifier cut-offs."""
        lms = {id(p) for encoder in self.language_model_encoders() for p in encoder.parameters()}
        return {name: p for name, p in self.named_parameters() if id(p) not in lms}

    def language_model_encoders(self) -> list[SpladeEncoder]:
        sides = [self.document_encoder, self.query_encoder]
        return [e for i, e in enumerate(sides) if isinstance(e, SpladeEncoder) and e not in sides[:i]]

    def own_parameters_fingerprint(self) -> str:
        return parameters_fingerprint(self.own_parameters())

    def parameter_groups(self, optim_cfg) -> list[dict]:
        """The query table trains at optim.query_table_lr, without weight decay; everything else at optim.lr."""
        table = {id(p) for p in self.query_encoder.parameters()} if not self.regularise_queries else set()
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in table]}]
        if table:
            groups.append({"params": [p for p in trainable if id(p) in table], "lr": optim_cfg.query_table_lr,
                           "weight_decay": 0.0})
        return [group for group in groups if group["params"]]

    def save(self, folder: Path) -> None:
        """The document (or shared) LM's adapter at `folder` itself, a separate query LM's in a subfolder,
        and the encoder's own parameters beside them."""
        save_adapter(self.document_encoder.masked_lm, folder)
        if isinstance(self.query_encoder, SpladeEncoder) and self.query_encoder is not self.document_encoder:
            save_adapter(self.query_encoder.masked_lm, folder / QUERY_LM_FOLDER)
        own = self.own_parameters()
        if own:
            save_file({name: p.detach().cpu().contiguous() for name, p in own.items()}, folder / OWN_PARAMETERS_FILE)


def as_sparse_encoder(encoder: nn.Module) -> nn.Module:
    """A bare SpladeEncoder is the splade variant without sparsifiers; any other encoder is returned as it is."""
    return SparseEncoder(encoder, encoder) if isinstance(encoder, SpladeEncoder) else encoder


def build_encoder(encoder_cfg, masked_lm: nn.Module, tokenizer, corpus: Mapping[str, str], doc_max_length: int,
                  adapt: Callable[[nn.Module], nn.Module] | None = None) -> SparseEncoder:
    """The `encoder.name` variant on `masked_lm`, each LM passed through `adapt` (None: untrained, as loaded).

    `corpus` is what the inference-free query table's IDF is computed over (the training corpus).
    """
    if encoder_cfg.name not in ENCODER_VARIANTS:
        raise ConfigError("encoder.name", f"unknown encoder '{encoder_cfg.name}'", f"use one of {', '.join(ENCODER_VARIANTS)}")
    if encoder_cfg.bidirectional:
        make_bidirectional(masked_lm)
    if encoder_cfg.name in EMBEDDING_FAMILIES:
        if encoder_cfg.sparsifiers.documents.method != "none" or encoder_cfg.sparsifiers.queries.method != "none":
            raise ConfigError("encoder.sparsifiers", f"encoder={encoder_cfg.name} does not use sparsifiers",
                              "leave encoder.sparsifiers.*.method=none (csr's sparsity is encoder.csr.k)")
        build = build_dense_encoder if encoder_cfg.name == "dense" else build_csr_encoder
        return build(encoder_cfg, adapt(masked_lm) if adapt else masked_lm, tokenizer)
    separate = encoder_cfg.name == "splade_separate" and adapt is not None
    # Copied before adapting: PEFT injects its layers into the model it wraps. Untrained, both sides are
    # the same LM, so one copy serves both.
    query_lm = copy.deepcopy(masked_lm) if separate else None
    adapt = adapt or (lambda lm: lm)
    document_encoder = SpladeEncoder(adapt(masked_lm), encoder_cfg.pooling)
    if separate:
        query_encoder = SpladeEncoder(adapt(query_lm), encoder_cfg.pooling)
    elif encoder_cfg.name == "inference_free":
        initial = idf_weights(tokenizer, (corpus[doc_id] for doc_id in sorted(corpus)), doc_max_length)
        query_encoder = QueryWeightTable(initial, tokenizer.all_special_ids)
    else:
        query_encoder = document_encoder
    return SparseEncoder(
        query_encoder, document_encoder,
        build_sparsifier(encoder_cfg.sparsifiers.queries, "encoder.sparsifiers.queries"),
        build_sparsifier(encoder_cfg.sparsifiers.documents, "encoder.sparsifiers.documents"),
    )
