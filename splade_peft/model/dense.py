"""Dense retrievers on a language model, decoders first (`encoder=dense`): one embedding per text.

Pooling over the LM's last hidden states (the input of its vocabulary projection, which is never computed):
- eos: append the EOS token and take its state (RepLLaMA). Under causal attention it is the one position
  that has seen the whole text;
- last: the state of the text's last token as tokenised (no EOS appended);
- mean: the average over the text's tokens (instruction prefix included);
- latent_attention: NV-Embed's trainable block (model/latent_attention.py): tokens attend to learned latents,
  an MLP, then the mean over the text's tokens. Its parameters are the encoder's own (own_parameters), trained
  with the adapter and saved beside it.

Embeddings are L2-normalised in float32 and queries scaled by 1 / temperature, so that a query-document
score is cos(q, d) / temperature everywhere: in every ranking loss, in validation and in the Faiss index.
Unnormalised embeddings of an LLM have norms in the hundreds; a RepLLaMA-style QLoRA run on unnormalised
last-token embeddings diverged to NaN (RESULTS.md, Findings we build on). Normalised, every score is bounded
by 1 / temperature.

Instruction prefixes (`encoder.query_prefix`, `encoder.document_prefix`) are tokenised once, on their own,
and put in front of each text's tokens (after a leading BOS), so every path that feeds token ids (training
batches, indexing, validation) gets them; texts keep their truncation length, the prefix comes on top.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from safetensors.torch import save_file

from splade_peft.errors import ConfigError
from splade_peft.model.adapters import OWN_PARAMETERS_FILE, save_adapter
from splade_peft.model.encoder import vocabulary_projection_skipped
from splade_peft.model.latent_attention import LatentAttentionPooling
from splade_peft.model.sides import EncoderSide, parameters_fingerprint



class DenseEncoder(nn.Module):
    """encode_queries / encode_documents: token ids -> (batch, hidden) embeddings, unit norm (queries / temperature)."""

    is_sparse = False
    # Nothing to make sparse: the trainer applies no FLOPS/L1 regulariser to dense vectors.
    regularise_queries = False

    def __init__(self, language_model: nn.Module, pooling: str, eos_token_id: int | None,
                 query_prefix_ids: list[int] = (), document_prefix_ids: list[int] = (),
                 bos_token_id: int | None = None, normalize: bool = True, temperature: float = 1.0,
                 pooling_block: nn.Module | None = None):
        super().__init__()
        if pooling == "eos" and eos_token_id is None:
            raise ConfigError("encoder.pooling", "eos needs an EOS token and this backbone's tokenizer and config have none",
                              "use encoder.pooling=mean or encoder.pooling=last")
        self.masked_lm = language_model  # the name every encoder family gives its (adapted) LM
        self.pooling, self.eos_token_id, self.bos_token_id = pooling, eos_token_id, bos_token_id
        self.prefix_ids = {"queries": list(query_prefix_ids), "documents": list(document_prefix_ids)}
        self.normalize, self.temperature = normalize, temperature
        self.pooling_block = pooling_block  # latent_attention's trainable block; None for the fixed poolings

    def encode_queries(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids, attention_mask, "queries") / self.temperature

    def encode_documents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids, attention_mask, "documents")

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, side: str) -> torch.Tensor:
        """The pooled (and normalised) embedding of each text of `side`."""
        input_ids, attention_mask = self.prepared(input_ids, attention_mask, self.prefix_ids[side])
        projection = self.masked_lm.get_output_embeddings()
        with vocabulary_projection_skipped(projection):
            hidden = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.pooling_block is not None:
            pooled = self.pooling_block(hidden.float(), attention_mask)
        else:
            pooled = pool(hidden.float(), attention_mask, self.pooling)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def prepared(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: list[int]):
        """Each text's tokens with the prefix in front (after a leading BOS) and (pooling=eos) the EOS token
        behind unless it ends with one, re-padded on the right whatever side the tokenizer padded: positions then
        count from the first token of every row. Tensor operations on the whole batch: no per-row host sync."""
        if not prefix and self.pooling != "eos" and attention_mask[:, 0].all():
            return input_ids, attention_mask  # nothing to add, and every row starts at 0: right-padded already
        real = attention_mask.bool()
        lengths = real.sum(dim=1)
        rank = real.cumsum(dim=1) - 1  # each real token's place among its row's real tokens
        first = input_ids.gather(1, real.int().argmax(dim=1, keepdim=True)).squeeze(1)
        last = input_ids.gather(1, (real.shape[1] - 1 - real.flip(1).int().argmax(dim=1, keepdim=True))).squeeze(1)
        none = torch.zeros_like(real[:, 0])
        keeps_head = (lengths > 0) & (first == self.bos_token_id) if self.bos_token_id is not None else none
        adds_eos = (lengths == 0) | (last != self.eos_token_id) if self.pooling == "eos" else none
        new_lengths = lengths + len(prefix) + adds_eos
        width = int(new_lengths.max())
        # One spare column takes the writes that have no place (padding, rows without an EOS to add); dropped below.
        spare = width
        targets = torch.where(real, rank + len(prefix) * (rank >= keeps_head.long().unsqueeze(1)), spare)
        padded = input_ids.new_zeros((len(input_ids), width + 1)).scatter_(1, targets, input_ids)
        if prefix:
            places = keeps_head.long().unsqueeze(1) + torch.arange(len(prefix), device=input_ids.device)
            padded.scatter_(1, places, input_ids.new_tensor(prefix).expand(len(input_ids), -1))
        if self.pooling == "eos":
            places = torch.where(adds_eos, lengths + len(prefix), spare).unsqueeze(1)
            padded.scatter_(1, places, padded.new_full(places.shape, self.eos_token_id))
        mask = torch.arange(width, device=input_ids.device) < new_lengths.unsqueeze(1)
        return padded[:, :width].contiguous(), mask.to(attention_mask.dtype)

    def side(self, name: str) -> nn.Module:
        return EncoderSide(self, name)

    def language_model_encoders(self) -> list["DenseEncoder"]:
        return [self]

    def own_parameters(self) -> dict[str, torch.Tensor]:
        """The pooling block's parameters; every other parameter lives in the LM (and its adapter)."""
        block = self.pooling_block
        return {f"pooling_block.{name}": p for name, p in block.named_parameters()} if block is not None else {}

    def own_parameters_fingerprint(self) -> str:
        return parameters_fingerprint(self.own_parameters())

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        return {}

    def parameter_groups(self, optim_cfg) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def save(self, folder: Path) -> None:
        save_adapter(self.masked_lm, folder)
        own = self.own_parameters()
        if own:
            save_file({name: p.detach().cpu().contiguous() for name, p in own.items()}, Path(folder) / OWN_PARAMETERS_FILE)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, length, hidden) -> (batch, hidden) over right-padded rows."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    last = attention_mask.sum(dim=1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def special_token_id(tokenizer, language_model: nn.Module, name: str) -> int | None:
    """The tokenizer's `name` token id, else the model config's (a list there means several: the first)."""
    token_id = getattr(tokenizer, f"{name}_token_id", None)
    if token_id is None:
        token_id = getattr(language_model.config, f"{name}_token_id", None)
    return token_id[0] if isinstance(token_id, list) else token_id


def prefix_ids(tokenizer, prefix: str | None) -> list[int]:
    return tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []


def latent_attention_block(encoder_cfg, language_model: nn.Module) -> LatentAttentionPooling | None:
    if encoder_cfg.pooling != "latent_attention":
        return None
    settings, hidden_size = encoder_cfg.latent_attention, language_model.config.hidden_size
    if hidden_size % settings.heads:
        raise ConfigError("encoder.latent_attention.heads", f"{settings.heads} heads do not divide the backbone's hidden "
                          f"size {hidden_size}", "use a divisor of the hidden size, e.g. 1")
    return LatentAttentionPooling(hidden_size, settings.latents, settings.heads)


def build_dense_encoder(encoder_cfg, language_model: nn.Module, tokenizer) -> DenseEncoder:
    """`encoder=dense` on an (adapted) LM, its special tokens and prefixes taken from `tokenizer`."""
    return DenseEncoder(
        language_model, encoder_cfg.pooling, special_token_id(tokenizer, language_model, "eos"),
        prefix_ids(tokenizer, encoder_cfg.query_prefix), prefix_ids(tokenizer, encoder_cfg.document_prefix),
        bos_token_id=special_token_id(tokenizer, language_model, "bos"), normalize=encoder_cfg.normalize,
        temperature=encoder_cfg.temperature, pooling_block=latent_attention_block(encoder_cfg, language_model),
    )
