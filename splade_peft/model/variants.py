"""SPLADE encoder variants (the `encoder=` group): how queries and documents become sparse vocabulary vectors.

- splade: one adapted LM for both sides (pooling max or sum);
- splade_separate: a query LM and a document LM, copies of the same backbone, each with its own adapter;
- inference_free: documents through the adapted LM, queries through a learned per-token table
  initialised from IDF over the training corpus (no network at query time, no query regulariser).

Every variant applies its own sparsifier to each side's vectors (see sparsifiers.py).
"""

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from splade_peft.model.adapters import OWN_PARAMETERS_FILE, save_adapter
from splade_peft.model.config import ENCODERS, CsrEncoderConfig, DenseEncoderConfig
from splade_peft.model.csr import build_csr_encoder
from splade_peft.model.decoders import make_bidirectional
from splade_peft.model.dense import build_dense_encoder
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.model.query_table import QueryWeightTable, idf_weights
from splade_peft.model.sides import EncoderSide, parameters_fingerprint
from splade_peft.model.sparsifiers import build_sparsifier

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
        """A static query table has no query encoder to make sparse: its regulariser is 0."""
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


@dataclass(frozen=True)
class EncoderParts:
    """What an encoder family is built from, beside its `encoder` section."""

    masked_lm: nn.Module
    tokenizer: object
    adapt: Callable[[nn.Module], nn.Module] | None  # None: untrained, as loaded
    idf_corpus: Mapping[str, str]  # the inference-free query table's IDF is computed over it (the training corpus)
    doc_max_length: int

    def adapted(self, lm: nn.Module) -> nn.Module:
        return self.adapt(lm) if self.adapt else lm


def build_encoder(encoder_cfg, masked_lm: nn.Module, tokenizer, corpus: Mapping[str, str], doc_max_length: int,
                  adapt: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
    """The `encoder.name` family on `masked_lm`, each LM passed through `adapt` (None: untrained, as loaded)."""
    family = ENCODERS.get(encoder_cfg.name)
    if encoder_cfg.bidirectional:
        make_bidirectional(masked_lm)
    return family.implementation(encoder_cfg, EncoderParts(masked_lm, tokenizer, adapt, corpus, doc_max_length))


def sparse_encoder(encoder_cfg, query_encoder: nn.Module, document_encoder: SpladeEncoder) -> SparseEncoder:
    return SparseEncoder(
        query_encoder, document_encoder,
        build_sparsifier(encoder_cfg.sparsifiers.queries, "encoder.sparsifiers.queries"),
        build_sparsifier(encoder_cfg.sparsifiers.documents, "encoder.sparsifiers.documents"),
    )


@ENCODERS.register("splade")
def splade(encoder_cfg, parts: EncoderParts) -> SparseEncoder:
    """One adapted LM for both sides."""
    shared = SpladeEncoder(parts.adapted(parts.masked_lm), encoder_cfg.pooling)
    return sparse_encoder(encoder_cfg, shared, shared)


@ENCODERS.register("splade_separate")
def splade_separate(encoder_cfg, parts: EncoderParts) -> SparseEncoder:
    """A query LM and a document LM, copies of the same backbone, each with its own adapter. Untrained, both
    sides are the same LM, so one serves both."""
    if parts.adapt is None:
        return splade(encoder_cfg, parts)
    query_lm = copy.deepcopy(parts.masked_lm)  # before adapting: PEFT injects its layers into the model it wraps
    document_encoder = SpladeEncoder(parts.adapt(parts.masked_lm), encoder_cfg.pooling)
    return sparse_encoder(encoder_cfg, SpladeEncoder(parts.adapt(query_lm), encoder_cfg.pooling), document_encoder)


@ENCODERS.register("inference_free")
def inference_free(encoder_cfg, parts: EncoderParts) -> SparseEncoder:
    """Documents through the adapted LM, queries through a per-token table initialised from IDF."""
    document_encoder = SpladeEncoder(parts.adapted(parts.masked_lm), encoder_cfg.pooling)
    corpus = parts.idf_corpus
    initial = idf_weights(parts.tokenizer, (corpus[doc_id] for doc_id in sorted(corpus)), parts.doc_max_length)
    return sparse_encoder(encoder_cfg, QueryWeightTable(initial, parts.tokenizer.all_special_ids), document_encoder)


@ENCODERS.register("dense", schema=DenseEncoderConfig, sparse=False)
def dense(encoder_cfg, parts: EncoderParts) -> nn.Module:
    return build_dense_encoder(encoder_cfg, parts.adapted(parts.masked_lm), parts.tokenizer)


@ENCODERS.register("csr", schema=CsrEncoderConfig)
def csr(encoder_cfg, parts: EncoderParts) -> nn.Module:
    return build_csr_encoder(encoder_cfg, parts.adapted(parts.masked_lm), parts.tokenizer)
