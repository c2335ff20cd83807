"""Every `lora=` option on a tiny random BERT: a few Lightning steps change exactly the intended parameters;
a saved adapter reloads onto its base with PEFT; wrong combinations fail before training."""

import json
import re
import warnings

import bitsandbytes.nn.modules
import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel
from transformers import (
    AutoModelForMaskedLM, GPT2Config, LlamaConfig, LlamaForCausalLM, ModernBertConfig, ModernBertForMaskedLM,
)

from tests.helpers import STEPS, composed, lora_cfg, sparse_vectors, train_steps
from splade_peft.config import validate
from splade_peft.errors import ConfigError
from splade_peft.model.adapters import (
    count_parameters, matched_module_names, save_adapter, scale_adapters, target_modules_for, wrap_with_adapter,
)
from splade_peft.model.backbones import backbone_dtype, load_backbone
from splade_peft.model.encoder import SpladeEncoder

# lora= option -> (overrides of lora.yaml as its conf file states them, parameters that must train)
ADAPTERS = {
    "lora": ({}, r"lora_[AB]"),
    "dora": ({"use_dora": True}, r"lora_[AB]|lora_magnitude_vector"),
    "pissa": ({"init": "pissa"}, r"lora_[AB]"),
    "olora": ({"init": "olora"}, r"lora_[AB]"),
    "adalora": ({"method": "adalora", "r": 8, "target_r": 4}, r"lora_[ABE]"),
    "ia3": ({"method": "ia3"}, r"ia3_l"),
    "vera": ({"method": "vera", "r": 32}, r"vera_lambda_[bd]"),
    "loha": ({"method": "loha", "r": 4, "alpha": 4}, r"hada_w[12]_[ab]"),
    "lokr": ({"method": "lokr", "r": 4, "alpha": 4}, r"lokr_w"),
    "head_transform": ({"train_head": "transform"}, r"lora_[AB]|modules_to_save\.default\.(dense|LayerNorm)"),
    "head_full": ({"train_head": "full"}, r"lora_[AB]|modules_to_save\.default\.(dense|LayerNorm|weight|bias)"),
    "layers": ({"layers": [1]}, r"layer\.1\..*lora_[AB]"),
}


@pytest.mark.parametrize("option", ADAPTERS)
def test_training_changes_exactly_the_adapter_parameters(option, base_folder, tokenizer):
    overrides, intended = ADAPTERS[option]
    torch.manual_seed(0)
    # AdaLoRA prunes ranks from its first budgeting step on, and a pruned rank no longer moves; scheduled
    # over more steps than run here, its warm-up (a tenth of them) covers them all.
    adapted = wrap_with_adapter(AutoModelForMaskedLM.from_pretrained(base_folder), lora_cfg(**overrides), 10 * STEPS)
    before = {name: p.detach().clone() for name, p in adapted.named_parameters()}
    train_steps(adapted, tokenizer)

    changed = {name for name, p in adapted.named_parameters() if not torch.equal(p, before[name])}
    should_train = {name for name in before if re.search(intended, name)}
    assert should_train and changed == should_train
    assert {name for name, p in adapted.named_parameters() if p.requires_grad} == should_train


def test_adalora_prunes_to_its_rank_budget(base_folder, tokenizer):
    cfg = lora_cfg(method="adalora", r=4, target_r=1)
    adapted = wrap_with_adapter(AutoModelForMaskedLM.from_pretrained(base_folder), cfg, STEPS)
    train_steps(adapted, tokenizer)
    singular_values = [p for name, p in adapted.named_parameters() if "lora_E" in name]
    kept = sum(int((values != 0).sum()) for values in singular_values)
    assert kept <= cfg.target_r * len(singular_values) < sum(values.numel() for values in singular_values)


@pytest.mark.parametrize("option", ["lora", "pissa", "adalora", "ia3", "vera", "loha", "lokr", "head_full"])
def test_saved_adapter_reloads_onto_its_base(option, base_folder, tokenizer, tmp_path):
    overrides, _ = ADAPTERS[option]
    cfg = lora_cfg(**overrides)
    torch.manual_seed(0)
    adapted = wrap_with_adapter(AutoModelForMaskedLM.from_pretrained(base_folder), cfg, STEPS)
    train_steps(adapted, tokenizer)
    expected = sparse_vectors(adapted, tokenizer)
    size = save_adapter(adapted, tmp_path / "adapter")

    reloaded = PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained(base_folder), tmp_path / "adapter")
    assert torch.allclose(sparse_vectors(reloaded, tokenizer), expected, atol=1e-5)
    assert size == sum(p.stat().st_size for p in (tmp_path / "adapter").glob("*.safetensors")) > 0
    assert json.loads((tmp_path / "adapter" / "splade_peft.json").read_text())["method"] == cfg.method


def test_untied_head_is_reported_and_leaves_the_embeddings_alone(base_folder):
    adapted = wrap_with_adapter(AutoModelForMaskedLM.from_pretrained(base_folder), lora_cfg(train_head="full"))
    embeddings = adapted.get_input_embeddings().weight
    projection = adapted.get_output_embeddings().weight
    assert projection.requires_grad and not embeddings.requires_grad
    assert projection.data_ptr() != embeddings.data_ptr() and torch.equal(projection, embeddings)
    counts = count_parameters(adapted)
    transform = 64 * 64 + 2 * 64 + 64  # dense weight and bias, LayerNorm weight and bias
    assert counts["head_copy"] == embeddings.numel() + embeddings.shape[0] + transform
    assert counts["head_copy_bytes"] == 4 * counts["head_copy"]


@pytest.mark.parametrize("quantization,weight_dtype", [("4bit", torch.uint8), ("8bit", torch.int8)])
def test_qlora_trains_only_lora_on_a_quantised_base(quantization, weight_dtype, base_folder, tokenizer, tmp_path):
    model_cfg = OmegaConf.create({"name_or_path": str(base_folder), "random_init": None})
    masked_lm, _ = load_backbone(model_cfg, tmp_path, quantization)
    query = masked_lm.bert.encoder.layer[0].attention.self.query
    assert query.weight.dtype == weight_dtype
    assert masked_lm.cls.predictions.transform.dense.weight.dtype == torch.float32  # the head stays full precision
    adapted = wrap_with_adapter(masked_lm, lora_cfg(quantization=quantization))
    before = {name: p.detach().clone() for name, p in adapted.named_parameters()}
    train_steps(adapted, tokenizer)
    changed = {name for name, p in adapted.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {name for name in before if re.search(r"lora_[AB]", name)}
    counts = count_parameters(adapted)
    assert counts["total"] == count_parameters(AutoModelForMaskedLM.from_pretrained(base_folder))["total"] + counts["trainable"]


def test_an_inference_pass_leaves_the_4bit_weights_trainable(base_folder, tokenizer, tmp_path, monkeypatch):
    """The zero-shot row and dev_at_start run the 4-bit model in eval mode before it trains. On a CPU with
    AVX512-BF16 (simulated, so that every machine shows it) bitsandbytes 0.50 would repack the weights in place
    for a forward-only kernel: training then backpropagates through a layer with no backward."""
    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    model_cfg = OmegaConf.create({"name_or_path": str(base_folder), "random_init": None})
    masked_lm, _ = load_backbone(model_cfg, tmp_path, "4bit")
    layers = [m for m in masked_lm.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    quantised = [layer.weight.detach().clone() for layer in layers]
    sparse_vectors(masked_lm, tokenizer)  # eval mode, no gradients: as the reference rows encode
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in layers)
    assert all(torch.equal(layer.weight, before) for layer, before in zip(layers, quantised, strict=True))
    adapted = wrap_with_adapter(masked_lm, lora_cfg(quantization="4bit"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*an autograd kernel was not registered")
        train_steps(adapted, tokenizer)


@pytest.mark.parametrize("device,precision,method,dtype", [
    ("cuda", "bf16-mixed", "lora", torch.bfloat16), ("cuda", "bf16", "ia3", torch.bfloat16),
    ("cuda", "bf16-mixed", "frozen", torch.bfloat16),
    ("cuda", "bf16-mixed", "full", torch.float32),  # every weight trains: fp32 master weights
    ("cpu", "bf16-mixed", "lora", torch.float32),  # bf16 matmuls are 25x slower on these CPUs
    ("cuda", "32-true", "lora", torch.float32), ("cuda", "16-mixed", "lora", torch.float32),
    ("cuda", "bf16-mixed", None, torch.float32),  # no method named: not a job's backbone
])
def test_the_frozen_base_is_bf16_only_under_bf16_mixed_on_cuda(device, precision, method, dtype):
    assert backbone_dtype(torch.device(device), precision, method) == dtype


def test_a_bf16_base_trains_fp32_adapters_and_head_copies(base_folder, tokenizer, tmp_path):
    """lora=... under bf16-mixed on CUDA: loaded in bf16 (no GPU needed to load it), everything that trains in fp32,
    and a backward under bf16 autocast reaches each trained weight in its own dtype."""
    model_cfg = OmegaConf.create({"name_or_path": str(base_folder), "random_init": None})
    masked_lm, _ = load_backbone(model_cfg, tmp_path, precision="bf16-mixed", device=torch.device("cuda", 0), method="lora")
    assert masked_lm.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    adapted = wrap_with_adapter(masked_lm, lora_cfg(train_head="full"))
    trained = {name: p for name, p in adapted.named_parameters() if p.requires_grad}
    assert any(".modules_to_save." in name for name in trained)
    assert {p.dtype for p in trained.values()} == {torch.float32}
    assert {p.dtype for p in adapted.parameters() if not p.requires_grad} == {torch.bfloat16}
    batch = tokenizer(["the cat sat on the mat", "sun moon star"], padding=True, return_tensors="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vectors = SpladeEncoder(adapted.train())(batch["input_ids"], batch["attention_mask"])
    vectors.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())


def test_a_quantised_backbone_loads_on_the_jobs_own_gpu(base_folder, tmp_path, monkeypatch):
    """Under DDP each rank's job device is its own GPU; `device_map {"": 0}` put every rank's model on cuda:0."""
    import splade_peft.model.backbones as backbones

    loaded = {}

    def load_pretrained(name_or_path, trust_remote_code, num_layers=None, **loading):
        loaded.update(loading)
        return torch.nn.Module(), None

    monkeypatch.setattr(backbones, "load_pretrained", load_pretrained)
    model_cfg = OmegaConf.create({"name_or_path": str(base_folder), "random_init": None})
    load_backbone(model_cfg, tmp_path, "4bit", "bf16-mixed", device=torch.device("cuda", 1), method="lora")
    assert loaded["device_map"] == {"": 1} and loaded["dtype"] == torch.bfloat16
    assert loaded["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert backbones.quantized_device_map(torch.device("cpu")) == "cpu"


def test_default_targets_match_modernbert_and_llama_blocks_but_not_their_heads():
    torch.manual_seed(0)
    modernbert = ModernBertForMaskedLM(ModernBertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, pad_token_id=0, bos_token_id=1,
                                                        eos_token_id=2, cls_token_id=1, sep_token_id=2,
                                                        num_attention_heads=2, intermediate_size=64))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=64))
    for model, per_layer in ((modernbert, 4), (llama, 7)):  # attn.Wqkv, attn.Wo, mlp.Wi, mlp.Wo
        matched = matched_module_names(model, target_modules_for(model, None))
        assert len(matched) == 2 * per_layer and not any("head" in name for name in matched), matched
        adapted = wrap_with_adapter(model, lora_cfg(layers=[1]))
        adapted_layers = {re.search(r"layers\.(\d+)\.", n).group(1) for n, _ in adapted.named_parameters() if "lora_" in n}
        assert adapted_layers == {"1"}


@pytest.mark.parametrize(
    "overrides,key",
    [(["lora.r=0"], "lora.r"), (["lora.method=qlora"], "lora.method"), (["lora.quantization=2bit"], "lora.quantization"),
     (["lora=ia3", "lora.r=8"], "lora.r"), (["lora=full", "lora.quantization=4bit"], "lora.quantization"),
     (["lora=vera", "lora.use_dora=true"], "lora.use_dora"), (["lora=adalora", "lora.target_r=64"], "lora.target_r"),
     (["lora.train_head=decoder"], "lora.train_head"), (["lora.layers=[-1]"], "lora.layers"),
     (["lora=lora", "lora.target_r=4"], "lora.target_r"), (["lora=pissa", "lora.train_head=full"], "lora.train_head"),
     (["lora=qlora", "trainer.precision=bf16-true"], "trainer.precision"),
     (["lora=qlora8", "trainer.precision=16-true"], "trainer.precision")],
)
def test_wrong_adapter_options_name_the_key_and_the_allowed_values(overrides, key):
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}'.*(use|leave) "):
        validate(composed(*overrides))


@pytest.mark.parametrize("option", ["qlora", "qlora8", "pissa", "olora", "adalora", "ia3", "vera", "loha", "lokr"])
def test_every_adapter_file_is_valid_and_composes_with_lora_r(option):
    validate(composed(f"lora={option}"))
    cfg = composed(f"lora={option}", "lora.r=16")
    assert cfg.lora.r == 16
    if option == "ia3":  # IA3 has no rank: a rank set for it is a mistake, not silently ignored
        with pytest.raises(ConfigError, match="lora.r.*ia3 does not use it"):
            validate(cfg)
    else:
        validate(cfg)


def test_model_dependent_mistakes_fail_before_training(base_folder, tmp_path):
    model = AutoModelForMaskedLM.from_pretrained(base_folder)
    with pytest.raises(ConfigError, match="lora.target_modules"):
        wrap_with_adapter(model, lora_cfg(target_modules=["no_such_layer"]))
    with pytest.raises(ConfigError, match=r"lora.layers.*0\.\.1"):
        wrap_with_adapter(model, lora_cfg(layers=[5]))
    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")  # config only: the check must not need weights
    gpt2 = OmegaConf.create({"name_or_path": str(tmp_path / "gpt2"), "random_init": None})
    with pytest.raises(ConfigError, match="lora.quantization.*cannot quantise a 'gpt2'"):
        load_backbone(gpt2, tmp_path, "4bit")



def test_scaling_the_trained_lora_interpolates_between_the_checkpoint_and_the_adapter(base_folder, tokenizer):
    """eval.adapter_scale: 0 is the starting checkpoint exactly, 1 the trained adapter, 0.5 lies between."""
    base = AutoModelForMaskedLM.from_pretrained(base_folder)
    before = sparse_vectors(base, tokenizer)
    adapted = wrap_with_adapter(AutoModelForMaskedLM.from_pretrained(base_folder), lora_cfg())
    train_steps(adapted, tokenizer)
    trained = sparse_vectors(adapted, tokenizer)
    assert scale_adapters(adapted, 0.5) > 0
    halfway = sparse_vectors(adapted, tokenizer)
    scale_adapters(adapted, 0.0)
    assert torch.allclose(sparse_vectors(adapted, tokenizer), before, atol=1e-6)
    assert not torch.allclose(trained, before) and 0 < (halfway - before).norm() < (trained - before).norm()


@pytest.mark.parametrize("overrides", [["lora=dora", "eval.adapter_scale=0.5"], ["lora=ia3", "eval.adapter_scale=0"]])
def test_adapter_scale_needs_a_lora_update(overrides):
    with pytest.raises(ConfigError, match="config key 'eval.adapter_scale'"):
        validate(composed(*overrides))
