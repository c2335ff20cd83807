import os
from pathlib import Path

import pytest
from transformers import BertTokenizerFast

# No hub is reachable here: fail fast instead of retrying, and never try to reach W&B.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CHECKPOINTS = REPO / ".cache" / "checkpoints"


def shared_collection(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "corpus.jsonl").exists():
        pytest.skip(f"{folder} not found: the shared test collections live in ../shared/data beside the repo")
    return folder


def offline_checkpoint(name: str) -> Path:
    folder = CHECKPOINTS / name
    if not (folder / "config.json").exists():
        pytest.fail(f"{folder} missing: run `make checkpoints` (make test does it)")
    return folder


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


WORDS = "the a cat dog sat on mat ran park sun moon star blue red green tree house car road".split()


def word_tokenizer() -> BertTokenizerFast:
    """A whole-word tokenizer over WORDS for tiny random models.

    Built from a vocab mapping: transformers 5 ignores `vocab_file` here, which left every word [UNK].
    """
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)})
