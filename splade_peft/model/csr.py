"""CSR, contrastive sparse representation (`encoder=csr`): a top-k sparse autoencoder over a dense encoder's
embeddings. Its latent activations are the sparse vectors; they are indexed in the Lucene impact index like
SPLADE's, each latent dimension a "term" named d<index>.

Training adds the autoencoder's reconstruction loss (weight `encoder.csr.reconstruction_weight`) to the
ranking loss on the sparse codes (and the FLOPS/L1 regularisers, which apply to any sparse vector). The
backbone may stay frozen (lora=frozen trains the autoencoder alone, as in the CSR paper) or carry an adapter.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from splade_peft.model.adapters import OWN_PARAMETERS_FILE
from splade_peft.model.dense import DenseEncoder, build_dense_encoder
from splade_peft.model.sides import EncoderSide, parameters_fingerprint

# A fixed initialisation: the zero-shot reference row is then the very autoencoder that training starts from.
INIT_SEED = 0


class TopKAutoencoder(nn.Module):
    """z = top_k(relu(W_enc (x - b_pre) + b_enc)), reconstruction W_dec z + b_pre."""

    def __init__(self, dim: int, latent_dim: int, k: int):
        super().__init__()
        generator = torch.Generator().manual_seed(INIT_SEED)
        encoder_weight = torch.randn(latent_dim, dim, generator=generator) / dim ** 0.5
        self.k = k
        self.pre_bias = nn.Parameter(torch.zeros(dim))
        self.encoder_weight = nn.Parameter(encoder_weight)
        self.encoder_bias = nn.Parameter(torch.zeros(latent_dim))
        # The decoder starts as the encoder's transpose with unit columns (the usual top-k SAE initialisation).
        self.decoder_weight = nn.Parameter(nn.functional.normalize(encoder_weight.T.clone(), dim=0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        activations = torch.relu((x - self.pre_bias) @ self.encoder_weight.T + self.encoder_bias)
        top = activations.topk(self.k, dim=-1)
        return torch.zeros_like(activations).scatter(-1, top.indices, top.values)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.decoder_weight.T + self.pre_bias


class CsrEncoder(nn.Module):
    """encode_queries / encode_documents: token ids -> (batch, latent_dim) non-negative codes with k non-zeros."""

    is_sparse = True
    regularise_queries = True

    def __init__(self, dense: DenseEncoder, autoencoder: TopKAutoencoder, reconstruction_weight: float):
        super().__init__()
        self.dense, self.autoencoder, self.reconstruction_weight = dense, autoencoder, reconstruction_weight
        self.term_names = [f"d{index}" for index in range(autoencoder.encoder_bias.shape[0])]
        self.pending_reconstruction: list[torch.Tensor] = []

    @property
    def masked_lm(self) -> nn.Module:
        return self.dense.masked_lm

    def encode_queries(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.codes(self.dense.embed(input_ids, attention_mask, "queries"))

    def encode_documents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.codes(self.dense.embed(input_ids, attention_mask, "documents"))

    def codes(self, embeddings: torch.Tensor) -> torch.Tensor:
        codes = self.autoencoder.encode(embeddings)
        if torch.is_grad_enabled() and self.training:
            # The target is detached: reconstruction trains the autoencoder, not the embeddings towards it.
            error = (self.autoencoder.decode(codes) - embeddings.detach()).pow(2).sum(dim=-1).mean()
            self.pending_reconstruction.append(error)
        return codes

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """The weighted reconstruction loss of the texts encoded since the last call (one training step's)."""
        if not self.pending_reconstruction:
            return {}
        errors, self.pending_reconstruction = self.pending_reconstruction, []
        return {"reconstruction": self.reconstruction_weight * torch.stack(errors).mean()}

    def side(self, name: str) -> nn.Module:
        return EncoderSide(self, name)

    def language_model_encoders(self) -> list[DenseEncoder]:
        return [self.dense]

    def own_parameters(self) -> dict[str, torch.Tensor]:
        return {f"autoencoder.{name}": p for name, p in self.autoencoder.named_parameters()}

    def own_parameters_fingerprint(self) -> str:
        return parameters_fingerprint(self.own_parameters())

    def parameter_groups(self, optim_cfg) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def save(self, folder: Path) -> None:
        """The LM's adapter at `folder` unless the LM stayed frozen, the autoencoder beside it."""
        if any(p.requires_grad for p in self.masked_lm.parameters()):
            self.dense.save(folder)
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({name: p.detach().cpu().contiguous() for name, p in self.own_parameters().items()},
                  Path(folder) / OWN_PARAMETERS_FILE)  # where SavedEncoder reads an encoder's own parameters


def build_csr_encoder(encoder_cfg, language_model: nn.Module, tokenizer) -> CsrEncoder:
    """`encoder=csr`: the dense encoder of the same config (pooling, prefixes, normalisation) under a top-k autoencoder."""
    csr = encoder_cfg.csr
    dense = build_dense_encoder(encoder_cfg, language_model, tokenizer)
    return CsrEncoder(dense, TopKAutoencoder(language_model.config.hidden_size, csr.latent_dim, csr.k),
                      csr.reconstruction_weight)
