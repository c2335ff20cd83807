"""Backbones (masked or causal LMs): offline checkpoints, tiny random models for tests, or any hub id;
`model.num_layers` keeps only the first N transformer blocks (a real but shallow model for CPU studies)."""

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoConfig, AutoTokenizer, BertConfig, BertForMaskedLM, BitsAndBytesConfig, PreTrainedTokenizerFast,
)
from transformers.utils import logging as transformers_logging

from splade_peft.errors import ConfigError, MissingCheckpointError, SpladePeftError
from splade_peft.model.adapters import HEAD_MODULES
from splade_peft.model.config import ADAPTER_METHODS
from splade_peft.model.pretrained import FETCH_COMMAND, fetch_command_for
from splade_peft.model.decoders import language_model_class, random_llama
from splade_peft.records import fingerprint, locked, staged

log = logging.getLogger(__name__)
# Per-shard progress bars would flood the logs of every job of a sweep.
transformers_logging.disable_progress_bar()


def looks_like_local_path(name_or_path: str) -> bool:
    return name_or_path.startswith(("/", ".", "~")) or Path(name_or_path).exists()


# Lightning precision -> the dtype bitsandbytes computes in (its weights stay 4/8-bit).
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "32": torch.float32, "64": torch.float64}
CPU = torch.device("cpu")


def compute_dtype(precision) -> torch.dtype:
    return COMPUTE_DTYPES[str(precision).split("-")[0]]


def backbone_dtype(device: torch.device, precision, method: str | None) -> torch.dtype:
    """The dtype an unquantised backbone loads in: bf16 when bf16-mixed trains an adapter on CUDA, else fp32.

    Autocast would otherwise cast the frozen fp32 weights to bf16 at every forward and keep those copies for
    backward (twice the weights' memory). What trains stays fp32 (wrap_with_adapter); `full` trains every
    weight, so its fp32 master weights stay. The CPU stays fp32: bf16 matmuls are 25x slower there.
    """
    frozen_base = method == "frozen" or (method is not None and ADAPTER_METHODS.get(method).peft)
    if device.type == "cuda" and str(precision) in ("bf16-mixed", "bf16") and frozen_base:
        return torch.bfloat16
    return torch.float32


def load_backbone(model_cfg, cache_dir: str | Path, quantization: str | None = None, precision="32-true",
                  device: torch.device = CPU, method: str | None = None):
    """Return (masked-LM, tokenizer) for `model.name_or_path`, building the tiny random model when asked.

    `quantization` (4bit | 8bit) loads the linear layers through bitsandbytes onto `device`, computing in the
    trainer's precision; otherwise the weights load on the CPU in backbone_dtype (the job moves them).
    """
    if model_cfg.get("random_init"):
        name_or_path = str(build_random_backbone(model_cfg.random_init, Path(cache_dir) / "models" / model_cfg.name))
        trust_remote_code = False
    else:
        name_or_path = str(model_cfg.name_or_path)
        trust_remote_code = bool(model_cfg.get("trust_remote_code", False))
        if looks_like_local_path(name_or_path) and not (Path(name_or_path) / "config.json").exists():
            raise MissingCheckpointError(
                f"model.name_or_path={name_or_path}: no checkpoint there -- run `{fetch_command_for(name_or_path)}` to fetch the offline "
                "checkpoints, or set model.name_or_path to a Hugging Face folder or hub id"
            )
    if quantization:
        model_type = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
        settings = quantized_loading(quantization, model_type, compute_dtype(precision), device)
    else:
        settings = {"dtype": backbone_dtype(device, precision, method)}
    model, tokenizer = load_pretrained(name_or_path, trust_remote_code, num_layers=model_cfg.get("num_layers"), **settings)
    if quantization == "4bit":
        keep_4bit_layout_trainable(model)
    return model, tokenizer


def quantized_loading(quantization: str, model_type: str, dtype: torch.dtype, device: torch.device) -> dict:
    if model_type not in HEAD_MODULES:
        raise ConfigError(
            "lora.quantization", f"cannot quantise a '{model_type}' backbone (its MLM head is unknown, and the head "
            "must stay in full precision)", f"use a backbone of type {', '.join(HEAD_MODULES)}, or lora.quantization=null",
        )
    transform, projection = HEAD_MODULES[model_type]
    # The MLM head stays in full precision: SPLADE reads the vocabulary projection's weight directly,
    # and lora.train_head trains copies of it.
    keep = sorted({name.split(".")[0] for name in transform + projection})
    if quantization == "4bit":
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=keep,
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    return {"quantization_config": config, "device_map": quantized_device_map(device), "dtype": dtype}


def quantized_device_map(device: torch.device) -> dict | str:
    """bitsandbytes quantises the weights where they will compute: the job's own GPU (under DDP each rank's,
    not cuda:0 for all of them), else the CPU."""
    if device.type != "cuda":
        return "cpu"
    return {"": device.index if device.index is not None else torch.cuda.current_device()}


def keep_4bit_layout_trainable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes (0.50) repacking 4-bit weights for CPU inference.

    On a CPU with AVX512-BF16, the first forward of a Linear4bit in eval mode without gradients (the zero-shot
    row, dev_at_start) rewrites its weight in place into a bf16 inference layout that only a forward-only kernel
    reads: training afterwards cannot backpropagate through the layer, and the layout's inverse rounds the
    quantisation scales through bf16. The differentiable fp32 path also keeps every reference row's numbers
    independent of the CPU's instruction set.
    """
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_pretrained(name_or_path: str, trust_remote_code: bool, num_layers: int | None = None, **loading):
    """(model, tokenizer); with `num_layers`, only the first blocks' weights are loaded (the rest are skipped)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model_class = language_model_class(name_or_path, trust_remote_code)
        if num_layers is None:
            model = model_class.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **loading)
        else:
            config = truncated_config(name_or_path, trust_remote_code, num_layers)
            # The dropped blocks' weights are reported as unexpected keys, a table per load: expected here.
            with transformers_verbosity(transformers_logging.ERROR):
                model = model_class.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, config=config, **loading)
            log.info("kept the first %d blocks of %s", num_layers, name_or_path)
    except OSError as error:
        raise SpladePeftError(
            f"model.name_or_path={name_or_path}: cannot load it ({str(error).splitlines()[0]}) -- a hub id needs a "
            f"network; offline, use model=splade_2l or model=minilm after `{FETCH_COMMAND}`, or a local folder"
        ) from error
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Decoder tokenizers often have no padding token; padded positions are masked out everywhere.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@contextmanager
def transformers_verbosity(level: int):
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity(level)
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)


def truncated_config(name_or_path: str, trust_remote_code: bool, num_layers: int):
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    available = config.num_hidden_layers
    if not 1 <= num_layers <= available:
        raise ConfigError("model.num_layers", f"{num_layers} is not a block count of {name_or_path} ({available} layers)",
                          f"use an integer in 1..{available}, or null for all of them")
    config.num_hidden_layers = num_layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2, Gemma...)
        config.layer_types = config.layer_types[:num_layers]
    return config


def build_random_backbone(random_init, folder: Path) -> Path:
    """A random masked LM (BERT) or causal LM (Llama) with a WordPiece vocabulary learnt from the embedded collection."""
    folder = folder.with_name(f"{folder.name}-{fingerprint(dict(random_init))}")
    # Locked: parallel jobs on a cold cache build it once; the others wait and load it.
    with locked(folder):
        if (folder / "config.json").exists():
            return folder
        tokenizer = train_wordpiece_tokenizer(random_init.vocab_size, folder.parent)
        torch.manual_seed(random_init.seed)
        model = random_llama(random_init, tokenizer) if random_init.architecture == "llama" else random_bert(random_init, tokenizer)
        with staged(folder, folder=True) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    log.info("built tiny random backbone at %s", folder)
    return folder


def random_bert(random_init, tokenizer) -> BertForMaskedLM:
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=random_init.hidden_size,
        num_hidden_layers=random_init.num_hidden_layers,
        num_attention_heads=random_init.num_attention_heads,
        intermediate_size=random_init.intermediate_size,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForMaskedLM(config)
    # A random head puts every vocabulary term above zero somewhere in a text (dense vectors);
    # a negative output bias makes the untrained model as sparse as a trained SPLADE.
    model.cls.predictions.bias.data.fill_(random_init.output_bias)
    return model


def train_wordpiece_tokenizer(vocab_size: int, cache_dir: Path) -> PreTrainedTokenizerFast:
    # Imported here: the tokenizer trainer is only needed the first time a random backbone is built.
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from splade_peft.data.sources import load_collection

    corpus = load_collection("embedded", "test", cache_dir=cache_dir.parent).corpus
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        (corpus[doc_id] for doc_id in sorted(corpus)),
        trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False),
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )
