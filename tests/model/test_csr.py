"""CSR: a top-k sparse autoencoder over dense embeddings, trained with reconstruction + ranking, indexed by latent."""

import lightning as L
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tests.helpers import composed, loss_section
from splade_peft.data.pairs import TrainingCollator
from splade_peft.index.encode import encode_texts
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.adapters import OWN_PARAMETERS_FILE
from splade_peft.model.csr import TopKAutoencoder
from splade_peft.model.saved import SavedEncoder
from splade_peft.model.decoders import random_llama
from splade_peft.model.variants import build_encoder
from splade_peft.training.module import SpladeModule

LOSS = loss_section(lambda_d=1e-3, lambda_q=1e-3, warmup_steps=0)
OPTIM = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0, "warmup_steps": 1})
ITEMS = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car on road"]},
         {"query": "moon star", "documents": ["sun moon star", "green tree house"]}] * 4
K, LATENTS = 4, 64


def tiny_llama(tokenizer):
    torch.manual_seed(0)
    spec = OmegaConf.create({"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32})
    return random_llama(spec, tokenizer).eval()


def csr_encoder(tokenizer, lora: str = "frozen"):
    cfg = composed("experiment=smoke", "model=tiny_llama", "encoder=csr", f"lora={lora}",
                   f"encoder.csr.k={K}", f"encoder.csr.latent_dim={LATENTS}")
    return build_encoder(cfg.encoder, tiny_llama(tokenizer), tokenizer, {}, 16, adapt=lambda lm: wrap_with_adapter(lm, cfg.lora))


def test_codes_are_non_negative_with_at_most_k_active_latents():
    autoencoder = TopKAutoencoder(dim=16, latent_dim=LATENTS, k=K)
    codes = autoencoder.encode(torch.nn.functional.normalize(torch.randn(8, 16), dim=1))
    assert codes.shape == (8, LATENTS) and (codes >= 0).all() and ((codes > 0).sum(dim=1) <= K).all()


def test_the_initial_autoencoder_is_the_same_in_every_build(tokenizer):
    """The zero-shot reference row encodes with the autoencoder that training starts from."""
    assert csr_encoder(tokenizer).own_parameters_fingerprint() == csr_encoder(tokenizer).own_parameters_fingerprint()


def test_frozen_backbone_trains_the_autoencoder_with_its_reconstruction_loss(tokenizer, tmp_path):
    encoder = csr_encoder(tokenizer, lora="frozen")
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    module = SpladeModule(encoder, LOSS, OPTIM)
    logged = []
    module.log_dict = lambda values, **kwargs: logged.append(values)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    encoder.train()
    trainer.fit(module, DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)))
    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {f"autoencoder.{name}" for name in ("pre_bias", "encoder_weight", "encoder_bias", "decoder_weight")}
    assert all("train/reconstruction_loss" in values for values in logged) and encoder.pending_reconstruction == []
    encoder.save(tmp_path / "adapter")
    assert set(load_file(tmp_path / "adapter" / OWN_PARAMETERS_FILE)) == set(encoder.own_parameters())
    reloaded = csr_encoder(tokenizer)  # as model.adapter=<job> evaluates (and mine --retriever adapter mines) it
    SavedEncoder(tmp_path / "adapter").load_own_parameters(reloaded)
    assert all(torch.equal(p, encoder.own_parameters()[name]) for name, p in reloaded.own_parameters().items())
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # a frozen backbone is not copied


def test_adapted_backbone_trains_with_the_autoencoder(tokenizer):
    encoder = csr_encoder(tokenizer, lora="lora")
    assert any("lora_" in name for name, p in encoder.named_parameters() if p.requires_grad)
    assert encoder.language_model_encoders()[0].masked_lm is encoder.masked_lm


def test_encoded_texts_name_latent_dimensions_as_terms(tokenizer):
    encoder = csr_encoder(tokenizer)
    vectors = dict(encode_texts(encoder.side("documents"), tokenizer, {"d1": "the cat sat", "d2": "sun moon"}, 16))
    for vector in vectors.values():
        assert 0 < len(vector) <= K and all(term.startswith("d") and 0 <= int(term[1:]) < LATENTS for term in vector)
