"""Masked-LM backbones: offline checkpoints, a tiny random model for tests, or any hub id."""

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from splade_peft.errors import MissingCheckpointError, SpladePeftError
from splade_peft.model.checkpoints import FETCH_COMMAND
from splade_peft.model.decoders import language_model_class, random_llama
from splade_peft.records import fingerprint

log = logging.getLogger(__name__)
# Per-shard progress bars would flood the logs of every job of a sweep.
transformers_logging.disable_progress_bar()


def looks_like_local_path(name_or_path: str) -> bool:
    return name_or_path.startswith(("/", ".", "~")) or Path(name_or_path).exists()


def load_backbone(model_cfg, cache_dir: str | Path):
    """Return (masked-LM, tokenizer) for `model.name_or_path`, building the tiny random model when asked."""
    if model_cfg.get("random_init"):
        folder = build_random_backbone(model_cfg.random_init, Path(cache_dir) / "models" / model_cfg.name)
        return load_pretrained(str(folder), trust_remote_code=False)
    name_or_path = str(model_cfg.name_or_path)
    if looks_like_local_path(name_or_path) and not (Path(name_or_path) / "config.json").exists():
        raise MissingCheckpointError(
            f"model.name_or_path={name_or_path}: no checkpoint there -- run `{FETCH_COMMAND}` to fetch the offline "
            "checkpoints, or set model.name_or_path to a Hugging Face folder or hub id"
        )
    return load_pretrained(name_or_path, trust_remote_code=bool(model_cfg.get("trust_remote_code", False)))


def load_pretrained(name_or_path: str, trust_remote_code: bool):
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model_class = language_model_class(name_or_path, trust_remote_code)
        model = model_class.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise SpladePeftError(
            f"model.name_or_path={name_or_path}: cannot load it ({str(error).splitlines()[0]}) -- a hub id needs a "
            f"network; offline, use model=splade_2l or model=minilm after `{FETCH_COMMAND}`, or a local folder"
        ) from error
    return model, tokenizer


def build_random_backbone(random_init, folder: Path) -> Path:
    """A random masked LM (BERT) or causal LM (Llama) with a WordPiece vocabulary learnt from the embedded collection."""
    folder = folder.with_name(f"{folder.name}-{fingerprint(dict(random_init))}")
    if (folder / "config.json").exists():
        return folder
    staging = folder.with_name(folder.name + ".tmp")
    tokenizer = train_wordpiece_tokenizer(random_init.vocab_size, folder.parent)
    torch.manual_seed(random_init.seed)
    model = random_llama(random_init, tokenizer) if random_init.architecture == "llama" else random_bert(random_init, tokenizer)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
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

    from splade_peft.data.collections import load_collection

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
