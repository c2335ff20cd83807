"""Decoder (causal-LM) backbones for SPLADE: the term weights come from the LM head's next-token logits.

SpladeEncoder treats `lm_head` like a masked LM's vocabulary projection (it has no bias, which
MaskedMaxProjection handles); what differs is loading, the tiny random test model, and the choice
of attention mask.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, LlamaConfig, LlamaForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from splade_peft.errors import ConfigError


def language_model_class(name_or_path: str, trust_remote_code: bool):
    """AutoModelForMaskedLM for encoders, AutoModelForCausalLM for decoder-only families (Llama, Mistral...)."""
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    remote_classes = getattr(config, "auto_map", None) or {}
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or "AutoModelForMaskedLM" in remote_classes:
        return AutoModelForMaskedLM
    return AutoModelForCausalLM


def random_llama(random_init, tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=random_init.hidden_size,
        num_hidden_layers=random_init.num_hidden_layers,
        num_attention_heads=random_init.num_attention_heads,
        num_key_value_heads=random_init.num_attention_heads,
        intermediate_size=random_init.intermediate_size,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def is_decoder(model) -> bool:
    return model.config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def make_bidirectional(model) -> None:
    """Let every token attend to every other (non-padding) token, as an encoder does.

    transformers builds a bidirectional mask when `config.is_causal` is False; the attention modules'
    own `is_causal` flag is what SDPA falls back on when no mask is passed (no padding in the batch).
    """
    if not is_decoder(model):
        raise ConfigError(
            "encoder.bidirectional", f"a {model.config.model_type} masked LM attends both ways already",
            "use encoder.bidirectional=true only with a decoder backbone (e.g. model=tiny_llama), else false",
        )
    model.config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
