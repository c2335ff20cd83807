"""PEFT adapters around the masked-LM backbone (the `lora=` config group).

`lora.method` picks the PEFT method (LoRA and its DoRA/PiSSA/OLoRA/QLoRA variants, AdaLoRA, IA3, VeRA,
LoHa, LoKr), or one of the two baselines: `full` (every weight trains) and `frozen` (nothing trains).
"""

import json
import logging
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch
from peft import AdaLoraConfig, IA3Config, LoHaConfig, LoKrConfig, LoraConfig, PeftModel, PeftType, VeraConfig, get_peft_model
from torch import nn

from splade_peft.errors import ConfigError
from splade_peft.model.config import ADAPTER_METHODS

log = logging.getLogger(__name__)
# peft reads `model.is_gradient_checkpointing`, which transformers deprecates: a FutureWarning per job, no effect.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

# Every linear layer of the transformer blocks, and nothing of the MLM head: a bare `dense` would also
# match the head's transform (`cls.predictions.transform.dense`), which is a decision of its own (lora.train_head).
DEFAULT_TARGET_MODULES = {
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "modernbert": ["Wqkv", "Wo", "Wi"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# IA3 scales the *input* of feed-forward layers and the output of the others: the MLP's second linear.
FEEDFORWARD_MODULES = {
    "bert": ["output.dense"], "distilbert": ["lin2"], "roberta": ["output.dense"], "xlm-roberta": ["output.dense"],
    "modernbert": ["mlp.Wo"], "llama": ["down_proj"], "mistral": ["down_proj"],
}
# The MLM head: (transform before the vocabulary projection, the vocabulary projection itself).
HEAD_MODULES = {
    "bert": (["cls.predictions.transform"], ["cls.predictions.decoder"]),
    "distilbert": (["vocab_transform", "vocab_layer_norm"], ["vocab_projector"]),
    "roberta": (["lm_head.dense", "lm_head.layer_norm"], ["lm_head.decoder"]),
    "xlm-roberta": (["lm_head.dense", "lm_head.layer_norm"], ["lm_head.decoder"]),
    "modernbert": (["head"], ["decoder"]),
    "llama": ([], ["lm_head"]),
    "mistral": ([], ["lm_head"]),
}

METADATA_FILE = "splade_peft.json"
# What an encoder saves besides its LM adapter(s): the parameters it keeps outside the LMs (query table, learned
# sparsifier values, a dense pooling block), read back by model/saved.py.
OWN_PARAMETERS_FILE = "encoder_parameters.safetensors"


def family_setting(table: dict, model_type: str, key: str, fix: str):
    if model_type not in table:
        raise ConfigError(key, f"no default for model type '{model_type}' (known: {', '.join(table)})", fix)
    return table[model_type]


def target_modules_for(model: nn.Module, configured) -> list[str]:
    if configured:
        return list(configured)
    return family_setting(
        DEFAULT_TARGET_MODULES, model.config.model_type, "lora.target_modules",
        "list the linear layers to adapt, e.g. lora.target_modules=[query,value]",
    )


def matched_module_names(model: nn.Module, targets: list[str]) -> list[str]:
    return [name for name, _ in model.named_modules() if any(name == t or name.endswith("." + t) for t in targets)]


def head_modules_to_save(model: nn.Module, train_head: str) -> list[str] | None:
    """PEFT trains and saves a copy of each listed module; the copy of the vocabulary projection is thereby
    untied from the (frozen) input embeddings, at the cost of its own vocab x hidden matrix."""
    if train_head == "frozen":
        return None
    transform, projection = family_setting(
        HEAD_MODULES, model.config.model_type, "lora.train_head", "use lora.train_head=frozen for this backbone"
    )
    return transform + (projection if train_head == "full" else [])


def layer_selection(model: nn.Module, layers) -> dict:
    if layers is None:
        return {}
    count = model.config.num_hidden_layers
    outside = [layer for layer in layers if not 0 <= layer < count]
    if outside:
        raise ConfigError("lora.layers", f"{outside} outside the backbone's {count} layers", f"use indices in 0..{count - 1}")
    # No layers_pattern: PEFT takes the first number in a module's name as its block index (`encoder.layer.3.`).
    return {"layers_to_transform": list(layers)}


def targeting(model: nn.Module, lora_cfg, targets: list[str]) -> dict:
    """The PeftConfig arguments every PEFT method shares: which modules it adapts and which it trains whole."""
    return {
        "target_modules": targets, "modules_to_save": head_modules_to_save(model, lora_cfg.train_head),
        **layer_selection(model, lora_cfg.layers),
    }


# Each PEFT method: (backbone, lora.* section, the shared targeting arguments, training steps) -> its PeftConfig.

@ADAPTER_METHODS.register("lora", reads=("r", "alpha", "dropout", "use_rslora", "use_dora", "bias", "init", "quantization"))
def lora(model: nn.Module, lora_cfg, shared: dict, total_steps: int) -> LoraConfig:
    return LoraConfig(
        r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout, use_rslora=lora_cfg.use_rslora,
        use_dora=lora_cfg.use_dora, bias=lora_cfg.bias,
        init_lora_weights=True if lora_cfg.init == "gaussian" else lora_cfg.init, **shared,
    )


@ADAPTER_METHODS.register("adalora", reads=("r", "alpha", "dropout", "bias", "target_r"))
def adalora(model: nn.Module, lora_cfg, shared: dict, total_steps: int) -> AdaLoraConfig:
    # Rank budget: warm up for the first tenth of training, then prune from r to target_r, and keep the
    # final allocation for the last fifth (fractions of AdaLoRA's paper, scaled to our step count).
    return AdaLoraConfig(
        init_r=lora_cfg.r, target_r=lora_cfg.target_r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
        bias=lora_cfg.bias, total_step=total_steps, tinit=total_steps // 10, tfinal=total_steps // 5, **shared,
    )


@ADAPTER_METHODS.register("ia3")
def ia3(model: nn.Module, lora_cfg, shared: dict, total_steps: int) -> IA3Config:
    feedforward = FEEDFORWARD_MODULES.get(model.config.model_type, [])
    return IA3Config(feedforward_modules=[t for t in shared["target_modules"] if t in feedforward], **shared)


@ADAPTER_METHODS.register("vera", reads=("r", "dropout", "bias"))
def vera(model: nn.Module, lora_cfg, shared: dict, total_steps: int) -> VeraConfig:
    return VeraConfig(r=lora_cfg.r, vera_dropout=lora_cfg.dropout, bias=lora_cfg.bias, **shared)


@ADAPTER_METHODS.register("loha", reads=("r", "alpha", "dropout"))
def loha(model: nn.Module, lora_cfg, shared: dict, total_steps: int) -> LoHaConfig:
    return LoHaConfig(r=lora_cfg.r, alpha=lora_cfg.alpha, module_dropout=lora_cfg.dropout, **shared)


@ADAPTER_METHODS.register("lokr", reads=("r", "alpha", "dropout"))
def lokr(model: nn.Module, lora_cfg, shared: dict, total_steps: int) -> LoKrConfig:
    return LoKrConfig(r=lora_cfg.r, alpha=lora_cfg.alpha, module_dropout=lora_cfg.dropout, **shared)


# The two baselines without PEFT: every weight trains, or none does.

@ADAPTER_METHODS.register("full", peft=False)
def full(model: nn.Module) -> nn.Module:
    return model.requires_grad_(True)


@ADAPTER_METHODS.register("frozen", peft=False)
def frozen(model: nn.Module) -> nn.Module:
    return model.requires_grad_(False)


def check_targets(model: nn.Module, lora_cfg) -> None:
    """The adapter's target modules exist in `model`: checked as soon as the backbone loads, before any
    reference row is computed."""
    if not ADAPTER_METHODS.get(lora_cfg.method).peft:
        return
    targets = target_modules_for(model, lora_cfg.target_modules)
    if not matched_module_names(model, targets):
        raise ConfigError(
            "lora.target_modules", f"{targets} matches no module of {model.config.model_type}",
            "name linear layers of the backbone (see `print(model)`)",
        )
    layer_selection(model, lora_cfg.layers)
    head_modules_to_save(model, lora_cfg.train_head)


def wrap_with_adapter(model: nn.Module, lora_cfg, total_steps: int = 1) -> nn.Module:
    """The backbone with `lora.method` applied; `total_steps` schedules AdaLoRA's rank budget."""
    method = ADAPTER_METHODS.get(lora_cfg.method)
    model.adapter_metadata = {  # read back by save_adapter, for the export
        "method": lora_cfg.method, "quantization": lora_cfg.get("quantization"), "base_model": model.name_or_path,
        "train_head": lora_cfg.get("train_head", "frozen"),
    }
    if not method.peft:
        return method.implementation(model)
    check_targets(model, lora_cfg)
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing is a memory/speed trade of its own, not part of making k-bit weights trainable.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = target_modules_for(model, lora_cfg.target_modules)
    adapted = get_peft_model(model, method.implementation(model, lora_cfg, targeting(model, lora_cfg, targets), total_steps))
    upcast_trained_parameters(adapted)
    if lora_cfg.method == "lora" and lora_cfg.init != "gaussian":
        keep_initial_adapter(adapted)
    return adapted


def upcast_trained_parameters(model: nn.Module) -> None:
    """What trains is fp32 on a half-precision base (backbone_dtype): PEFT upcasts its adapter layers, not the
    copies of the MLM head it trains (lora.train_head); optimiser updates to bf16 weights would round away."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.bfloat16, torch.float16):
            parameter.data = parameter.data.float()


def keep_initial_adapter(adapted: PeftModel) -> None:
    """PiSSA and OLoRA rewrite the base weights at initialisation; PEFT turns the trained adapter back into
    a plain LoRA on the *original* weights at save time, from the adapter as it was initialised."""
    folder = tempfile.TemporaryDirectory(prefix="splade-peft-initial-adapter-")
    config = adapted.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True
    adapted.save_pretrained(folder.name)
    config.init_lora_weights = init
    adapted.initial_adapter = folder  # lives as long as the model


def scale_adapters(model: nn.Module, scale: float) -> int:
    """Every LoRA update in `model` multiplied by `scale` (eval.adapter_scale): 0 is the starting checkpoint,
    1 the trained adapter, between them an interpolation of the weights, with no retraining. Returns how many
    LoRA layers were scaled."""
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    for layer in layers:
        for adapter in layer.active_adapters:
            layer.set_scale(adapter, scale)
    return len(layers)


def save_adapter(model: nn.Module, folder: Path) -> int:
    """Write what training produced (the adapter, or the whole model for `full`) and what the export needs to
    rebuild it; return the size of the saved weights in bytes."""
    initial = getattr(model, "initial_adapter", None)
    if initial is not None:
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=initial.name)
    else:
        model.save_pretrained(folder)
    metadata = getattr(model, "adapter_metadata", None)
    if metadata is not None:
        (Path(folder) / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return saved_weights_bytes(Path(folder))


def saved_weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))


class AdaLoraRankAllocation(L.Callback):
    """AdaLoRA re-allocates ranks from the gradients of each step, after the optimizer step (PEFT's recipe).

    Lightning zeroes gradients at the start of the next step, so they are still there at batch end.
    """

    def __init__(self, adapted: PeftModel):
        self.adapted = adapted

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.adapted.base_model.update_and_allocate(trainer.global_step)


def adapter_callbacks(model: nn.Module) -> list[L.Callback]:
    if isinstance(model, PeftModel) and model.peft_config[model.active_adapter].peft_type == PeftType.ADALORA:
        return [AdaLoraRankAllocation(model)]
    return []


def parameter_count(parameter: torch.Tensor) -> int:
    # bitsandbytes packs two 4-bit weights per byte; count the weights, not the bytes.
    quant_state = getattr(parameter, "quant_state", None)
    return quant_state.shape.numel() if quant_state is not None and hasattr(quant_state, "shape") else parameter.numel()


def count_parameters(model: nn.Module) -> dict[str, int]:
    counts = {
        "trainable": sum(parameter_count(p) for p in model.parameters() if p.requires_grad),
        "total": sum(parameter_count(p) for p in model.parameters()),
    }
    head_copies = [p for name, p in model.named_parameters() if ".modules_to_save." in name]
    if head_copies:
        # The trained copies of the MLM head (lora.train_head) come on top of the backbone's own weights.
        counts["head_copy"] = sum(p.numel() for p in head_copies)
        counts["head_copy_bytes"] = sum(p.numel() * p.element_size() for p in head_copies)
    return counts
