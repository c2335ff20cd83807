"""Dense encoders on a decoder: pooling, prefixes, normalisation, training, and the guard against divergence."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from tests.helpers import composed, loss_section
from splade_peft.config import validate
from splade_peft.data.pairs import TrainingCollator
from splade_peft.errors import ConfigError, TrainingDivergedError
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.decoders import random_llama
from splade_peft.model.dense import DenseEncoder
from splade_peft.model.variants import build_encoder
from splade_peft.training.module import SpladeModule

LORA = OmegaConf.create(
    {"method": "lora", "r": 4, "alpha": 4, "dropout": 0.0, "use_rslora": True, "use_dora": False, "bias": "none",
     "target_modules": None, "init": "gaussian", "quantization": None, "layers": None, "train_head": "frozen"}
)
LOSS = loss_section(lambda_d=1.0, lambda_q=1.0, warmup_steps=0)
OPTIM = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0, "warmup_steps": 1})
ITEMS = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car on road"]},
         {"query": "moon star", "documents": ["sun moon star", "green tree house"]}] * 4
TEXTS = ["cat sat on the mat", "sun"]


def tiny_llama(tokenizer):
    torch.manual_seed(0)
    spec = OmegaConf.create({"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32})
    return random_llama(spec, tokenizer).eval()


def dense_cfg(**overrides):
    return OmegaConf.merge(composed("experiment=smoke", "model=tiny_llama", "encoder=dense", "index=faiss").encoder, overrides)


def batch(tokenizer, texts, padding_side="right") -> dict:
    tokenizer.padding_side = padding_side
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    tokenizer.padding_side = "right"
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def fit(encoder, tokenizer, max_nonfinite_batches: int = 0, steps: int = 4) -> SpladeModule:
    module = SpladeModule(encoder, LOSS, OPTIM, max_nonfinite_batches)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    encoder.train()
    trainer.fit(module, DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16)))
    return module


def test_eos_pooling_is_the_normalised_state_of_an_appended_eos(tokenizer):
    llama = tiny_llama(tokenizer)
    encoder = build_encoder(dense_cfg(query_prefix="", document_prefix="the"), llama, tokenizer, {}, 16)
    eos, the = encoder.eos_token_id, tokenizer.convert_tokens_to_ids("the")
    with torch.no_grad():
        documents = encoder.encode_documents(**batch(tokenizer, ["sun"]))
        # The tokenizer ends texts with [SEP], the model's EOS already: it is not appended twice.
        expected = llama.model(input_ids=torch.tensor([[tokenizer.cls_token_id, the, tokenizer.convert_tokens_to_ids("sun"), eos]]))
    assert eos == tokenizer.sep_token_id
    assert torch.allclose(documents[0], F.normalize(expected.last_hidden_state[0, -1], dim=0), atol=1e-5)


@pytest.mark.parametrize("pooling", ["eos", "mean", "last"])
def test_embeddings_do_not_depend_on_the_padding_side(tokenizer, pooling):
    encoder = build_encoder(dense_cfg(pooling=pooling), tiny_llama(tokenizer), tokenizer, {}, 16)
    with torch.no_grad():
        right = encoder.encode_documents(**batch(tokenizer, TEXTS, "right"))
        left = encoder.encode_documents(**batch(tokenizer, TEXTS, "left"))
        alone = encoder.encode_documents(**batch(tokenizer, TEXTS[1:]))
    assert torch.allclose(right, left, atol=1e-5) and torch.allclose(right[1], alone[0], atol=1e-5)


def test_eos_is_appended_when_the_tokenizer_does_not(tokenizer):
    encoder = DenseEncoder(tiny_llama(tokenizer), "eos", eos_token_id=7, query_prefix_ids=[5, 6], bos_token_id=2)
    ids, mask = encoder.prepared(torch.tensor([[2, 9, 10], [2, 11, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]), [5, 6])
    assert ids.tolist() == [[2, 5, 6, 9, 10, 7], [2, 5, 6, 11, 7, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]


def framed_row_by_row(tokens: list[int], prefix: list[int], bos: int | None, eos: int | None) -> list[int]:
    """The reference: one text's real tokens with the prefix after a leading BOS and an EOS behind unless there."""
    head = tokens[:1] if bos is not None and tokens and tokens[0] == bos else []
    tail = [eos] if eos is not None and (not tokens or tokens[-1] != eos) else []
    return head + prefix + tokens[len(head):] + tail


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_the_batched_framing_matches_the_row_by_row_reference(pooling):
    generator = torch.Generator().manual_seed(0)
    bos, eos = 2, 7
    for case in range(60):
        rows, width = 1 + case % 5, 1 + case % 7
        ids = torch.randint(2, 10, (rows, width), generator=generator)  # BOS and EOS occur, leading and trailing
        lengths = torch.randint(0, width + 1, (rows,), generator=generator)  # empty rows too
        positions = torch.arange(width)
        left_padded = case % 2 == 1
        mask = (positions >= width - lengths.unsqueeze(1)) if left_padded else (positions < lengths.unsqueeze(1))
        prefix = [[], [5], [5, 6]][case % 3]
        encoder = DenseEncoder(None, pooling, eos_token_id=eos, bos_token_id=None if case % 4 == 3 else bos)
        got_ids, got_mask = encoder.prepared(ids, mask.long(), prefix)
        expected = [framed_row_by_row(row[keep].tolist(), prefix, encoder.bos_token_id, eos if pooling == "eos" else None)
                    for row, keep in zip(ids, mask)]
        assert [row[keep.bool()].tolist() for row, keep in zip(got_ids, got_mask)] == expected, (case, prefix)
        assert got_mask.dtype == torch.long
        assert got_mask.tolist() == [[1] * len(row) + [0] * (got_mask.shape[1] - len(row)) for row in expected]


def test_prefixes_change_only_their_side(tokenizer):
    llama = tiny_llama(tokenizer)
    plain = build_encoder(dense_cfg(query_prefix=None, document_prefix=None), llama, tokenizer, {}, 16)
    prefixed = build_encoder(dense_cfg(query_prefix="blue", document_prefix=None), llama, tokenizer, {}, 16)
    ids = batch(tokenizer, TEXTS)
    with torch.no_grad():
        assert torch.allclose(plain.encode_documents(**ids), prefixed.encode_documents(**ids))
        assert not torch.allclose(plain.encode_queries(**ids), prefixed.encode_queries(**ids))


def test_scores_are_cosines_over_the_temperature(tokenizer):
    encoder = build_encoder(dense_cfg(temperature=0.05), tiny_llama(tokenizer), tokenizer, {}, 16)
    ids = batch(tokenizer, TEXTS)
    with torch.no_grad():
        queries, documents = encoder.encode_queries(**ids), encoder.encode_documents(**ids)
    assert torch.allclose(documents.norm(dim=1), torch.ones(2)) and torch.allclose(queries.norm(dim=1), torch.full((2,), 20.0))
    assert (queries @ documents.T).abs().max() <= 20.0 + 1e-4


def test_a_decoder_without_eos_cannot_pool_eos(tokenizer):
    llama = tiny_llama(tokenizer)
    llama.config.eos_token_id = None
    with pytest.raises(ConfigError, match=r"'encoder\.pooling'.*use encoder\.pooling=mean or encoder\.pooling=last"):
        build_encoder(dense_cfg(pooling="eos"), llama, tokenizer, {}, 16)
    build_encoder(dense_cfg(pooling="mean"), llama, tokenizer, {}, 16)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_training_changes_only_the_adapter_without_sparsity_regularisers(tokenizer, bidirectional):
    encoder = build_encoder(dense_cfg(bidirectional=bidirectional), tiny_llama(tokenizer), tokenizer, {}, 16,
                            adapt=lambda lm: wrap_with_adapter(lm, LORA))
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    module = fit(encoder, tokenizer)
    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert module.nonfinite_batches == 0 and not encoder.is_sparse
    assert encoder.language_model_encoders()[0].masked_lm is encoder.masked_lm and encoder.own_parameters() == {}


def test_qlora_trains_a_dense_decoder_on_a_4bit_base(tokenizer, tmp_path):
    """RepLLaMA's recipe: LoRA over a 4-bit NF4 decoder, normalised embeddings; loss finite, only LoRA moves."""
    from splade_peft.model.backbones import load_backbone

    tiny_llama(tokenizer).save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    llama, _ = load_backbone(OmegaConf.create({"name_or_path": str(tmp_path / "llama"), "random_init": None}), tmp_path, "4bit")
    assert llama.model.layers[0].self_attn.q_proj.weight.dtype == torch.uint8  # packed NF4
    encoder = build_encoder(dense_cfg(), llama, tokenizer, {}, 16,
                            adapt=lambda lm: wrap_with_adapter(lm, OmegaConf.merge(LORA, {"quantization": "4bit"})))
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    module = fit(encoder, tokenizer)
    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name for name in changed) and module.nonfinite_batches == 0


def exploding_llama(tokenizer):
    """Hidden states of norm ~1e18: an exaggerated LLM (their norms run into the hundreds), so that
    unnormalised scores overflow float32 the way the research notes' RepLLaMA run overflowed to NaN."""
    llama = tiny_llama(tokenizer)
    llama.model.norm.weight.data.fill_(1e18)
    return llama


def test_normalisation_keeps_the_loss_finite_where_raw_embeddings_diverge(tokenizer):
    normalised = build_encoder(dense_cfg(), exploding_llama(tokenizer), tokenizer, {}, 16,
                               adapt=lambda lm: wrap_with_adapter(lm, LORA))
    assert fit(normalised, tokenizer).nonfinite_batches == 0
    raw = build_encoder(dense_cfg(normalize=False), exploding_llama(tokenizer), tokenizer, {}, 16,
                        adapt=lambda lm: wrap_with_adapter(lm, LORA))
    # The trainer's guard: a non-finite loss skips the batch, more than allowed stops the job.
    with pytest.raises(TrainingDivergedError, match="non-finite loss"):
        fit(raw, tokenizer, max_nonfinite_batches=1)


def test_saving_writes_the_adapter(tokenizer, tmp_path):
    encoder = build_encoder(dense_cfg(), tiny_llama(tokenizer), tokenizer, {}, 16, adapt=lambda lm: wrap_with_adapter(lm, LORA))
    encoder.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize("overrides,key", [
    (["encoder=dense"], "index.name"),
    (["encoder=splade", "index=faiss"], "index.name"),
    (["encoder=dense", "index=faiss", "encoder.pooling=max"], "encoder.pooling"),
    (["encoder=dense", "index=faiss", "encoder.temperature=0"], "encoder.temperature"),
    (["encoder=csr", "encoder.pooling=cls"], "encoder.pooling"),
    (["encoder=dense", "index=faiss", "encoder.sparsifiers.documents.method=top_k"], "encoder.sparsifiers"),
])
def test_wrong_dense_settings_name_the_key_and_allowed_values(overrides, key, tokenizer):
    cfg = composed("experiment=smoke", "model=tiny_llama", *overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        validate(cfg)
        build_encoder(cfg.encoder, tiny_llama(tokenizer), tokenizer, {}, 16)
    assert "use " in str(error.value) and "\n" not in str(error.value)


def test_dense_and_csr_compose_and_validate():
    validate(composed("experiment=smoke", "model=tiny_llama", "encoder=dense", "index=faiss"))
    validate(composed("experiment=smoke", "model=tiny_llama", "encoder=csr"))


def latent_attention_encoder(tokenizer, adapt=None):
    cfg = dense_cfg(pooling="latent_attention", latent_attention={"latents": 4, "heads": 2})
    return build_encoder(cfg, tiny_llama(tokenizer), tokenizer, {}, 16, adapt=adapt)


def test_latent_attention_block_trains_with_the_adapter(tokenizer):
    encoder = latent_attention_encoder(tokenizer, adapt=lambda lm: wrap_with_adapter(lm, LORA))
    own = encoder.own_parameters()
    assert {"pooling_block.latents", "pooling_block.mlp.0.weight"} <= set(own)
    assert all(p.requires_grad for p in own.values())
    trainable = {id(p) for group in encoder.parameter_groups(OPTIM) for p in group["params"]}
    assert {id(p) for p in own.values()} <= trainable
    queries = encoder.encode_queries(**batch(tokenizer, TEXTS))
    documents = encoder.encode_documents(**batch(tokenizer, TEXTS))
    (queries * documents).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.values())
    assert torch.allclose(documents.norm(dim=-1), torch.ones(2))


def test_latent_attention_block_is_saved_and_loaded_with_the_adapter(tokenizer, tmp_path):
    """What a job saves is what model.adapter=<run_dir> evaluation (and mining) loads: the same embeddings."""
    from splade_peft.model.adapters import OWN_PARAMETERS_FILE
    from splade_peft.model.saved import SavedEncoder

    trained = latent_attention_encoder(tokenizer, adapt=lambda lm: wrap_with_adapter(lm, LORA))
    with torch.no_grad():  # stand-in for training: the saved block differs from the fixed initialisation
        for parameter in trained.own_parameters().values():
            parameter.add_(0.1 * torch.randn_like(parameter))
    trained.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / OWN_PARAMETERS_FILE).exists()
    saved = SavedEncoder(tmp_path / "adapter")
    loaded = latent_attention_encoder(tokenizer, adapt=saved.adapt())
    fresh = latent_attention_encoder(tokenizer).encode_documents(**batch(tokenizer, TEXTS))
    saved.load_own_parameters(loaded)
    trained.eval(), loaded.eval()
    with torch.no_grad():
        expected = trained.encode_documents(**batch(tokenizer, TEXTS))
        assert torch.allclose(loaded.encode_documents(**batch(tokenizer, TEXTS)), expected, atol=1e-6)
        assert not torch.allclose(fresh, expected, atol=1e-4)


def test_latent_attention_heads_must_divide_the_hidden_size(tokenizer):
    cfg = dense_cfg(pooling="latent_attention", latent_attention={"latents": 4, "heads": 3})
    with pytest.raises(ConfigError, match="encoder.latent_attention.heads"):
        build_encoder(cfg, tiny_llama(tokenizer), tokenizer, {}, 16)
