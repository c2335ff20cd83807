"""Decoder backbones: the offline SmolLM2 (dequantised from its GGUF), shallow prefixes (model.num_layers)."""

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import CHECKPOINTS, offline_checkpoint
from splade_peft.errors import ConfigError, MissingCheckpointError
from splade_peft.model.backbones import load_backbone, load_pretrained
from splade_peft.model.decoders import is_decoder, random_llama
from splade_peft.model.pretrained import OFFLINE_CHECKPOINTS


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    spec = OmegaConf.create({"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32})
    folder = tmp_path_factory.mktemp("llama")
    random_llama(spec, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_num_layers_keeps_the_first_blocks_with_their_weights(llama_folder):
    full, _ = load_pretrained(str(llama_folder), False)
    shallow, _ = load_pretrained(str(llama_folder), False, num_layers=2)
    assert len(shallow.model.layers) == shallow.config.num_hidden_layers == 2
    for kept, original in zip(shallow.model.layers, full.model.layers):
        assert torch.equal(kept.mlp.up_proj.weight, original.mlp.up_proj.weight)
    assert torch.equal(shallow.lm_head.weight, full.lm_head.weight)


@pytest.mark.parametrize("num_layers", [0, 4])
def test_num_layers_outside_the_model_names_the_key_and_range(llama_folder, num_layers):
    with pytest.raises(ConfigError, match=r"'model\.num_layers'.*use an integer in 1\.\.3"):
        load_pretrained(str(llama_folder), False, num_layers=num_layers)


def test_a_missing_smollm2_names_its_make_target(tmp_path):
    cfg = OmegaConf.create({"name": "smollm2-135m", "name_or_path": str(tmp_path / "smollm2-135m"), "random_init": None})
    with pytest.raises(MissingCheckpointError, match="make smollm2"):
        load_backbone(cfg, tmp_path)
    assert OFFLINE_CHECKPOINTS["smollm2-135m"].fetch_command == "make smollm2"


def test_smollm2_loads_offline_as_a_shallow_llama():
    folder = offline_checkpoint("smollm2-135m")
    model, tokenizer = load_backbone(OmegaConf.create({"name_or_path": str(folder), "num_layers": 2}), CHECKPOINTS)
    assert is_decoder(model) and model.config.model_type == "llama" and len(model.model.layers) == 2
    assert model.config.vocab_size == len(tokenizer) == 49152 and model.config.tie_word_embeddings
    assert tokenizer.pad_token is not None and tokenizer.eos_token_id == model.config.eos_token_id


def test_smollm2_still_answers_a_basic_question():
    """The research notes' sanity check: the dequantised backbone and its chat template work as trained."""
    model, tokenizer = load_backbone(OmegaConf.create({"name_or_path": str(offline_checkpoint("smollm2-135m"))}), CHECKPOINTS)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        answer = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, prompt["input_ids"].shape[1]:])
