"""PEFT adapters around the masked-LM backbone (the `lora=` config group)."""

import logging

from peft import LoraConfig, get_peft_model
from torch import nn

from splade_peft.errors import ConfigError

log = logging.getLogger(__name__)

# Every linear layer of the transformer blocks, and nothing of the MLM head: a bare `dense` would also
# match the head's transform (`cls.predictions.transform.dense`), which is a decision of its own.
DEFAULT_TARGET_MODULES = {
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "modernbert": ["Wqkv", "Wo", "Wi"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

# lora: PEFT LoRA (DoRA with lora.use_dora); full: no adapter, every weight trains (the baseline
# adapters are measured against); frozen: nothing trains (the zero-shot checkpoint as a grid point).
ADAPTER_METHODS = ("lora", "full", "frozen")


def target_modules_for(model: nn.Module, configured) -> list[str]:
    if configured:
        return list(configured)
    model_type = model.config.model_type
    if model_type not in DEFAULT_TARGET_MODULES:
        raise ConfigError(
            "lora.target_modules",
            f"no default for model type '{model_type}'",
            "list the linear layers to adapt, e.g. lora.target_modules=[query,value]",
        )
    return DEFAULT_TARGET_MODULES[model_type]


def matched_module_names(model: nn.Module, targets: list[str]) -> list[str]:
    return [name for name, _ in model.named_modules() if any(name == t or name.endswith("." + t) for t in targets)]


def wrap_with_adapter(model: nn.Module, lora_cfg) -> nn.Module:
    if lora_cfg.method not in ADAPTER_METHODS:
        raise ConfigError("lora.method", f"unknown method '{lora_cfg.method}'", f"use one of {', '.join(ADAPTER_METHODS)}")
    if lora_cfg.method in ("full", "frozen"):
        return model.requires_grad_(lora_cfg.method == "full")
    targets = target_modules_for(model, lora_cfg.target_modules)
    if not matched_module_names(model, targets):
        raise ConfigError(
            "lora.target_modules", f"{targets} matches no module of {model.config.model_type}",
            "name linear layers of the backbone (see `print(model)`)",
        )
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        use_rslora=lora_cfg.use_rslora,
        use_dora=lora_cfg.use_dora,
        bias=lora_cfg.bias,
        target_modules=targets,
    )
    return get_peft_model(model, config)


def count_parameters(model: nn.Module) -> dict[str, int]:
    return {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
    }
