"""Helpers shared by the tests: paths, offline inputs, a word tokenizer, composed configs, the CLI.

Plain functions live here and fixtures in conftest.py, so that no test file imports another.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import BertTokenizerFast

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"
CHECKPOINTS = REPO / ".cache" / "checkpoints"
WORDS = "the a cat dog sat on mat ran park sun moon star blue red green tree house car road".split()


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


def word_tokenizer() -> BertTokenizerFast:
    """A whole-word tokenizer over WORDS for tiny random models.

    Built from a vocab mapping: transformers 5 ignores `vocab_file` here, which left every word [UNK].
    """
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)})


def composed(*overrides: str):
    """The project's config as `python -m splade_peft <overrides>` composes it (nothing validated yet)."""
    import splade_peft.config  # noqa: F401  (registers the resolvers and config schemas)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(run_dir: Path, *overrides: str, entry: list[str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m splade_peft hydra.run.dir=<run_dir> <overrides>` (or another entry, e.g. ["-c", code])."""
    return subprocess.run(
        [sys.executable, *(entry or ["-m", "splade_peft"]), f"hydra.run.dir={run_dir}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


# --- tiny adapters and training (tests of the model and training packages) -------------------------------

LORA = OmegaConf.create(
    {"method": "lora", "r": 4, "alpha": 4, "dropout": 0.0, "use_rslora": True, "use_dora": False, "bias": "none",
     "target_modules": None, "init": "gaussian", "quantization": None, "layers": None, "train_head": "frozen"}
)
def loss_section(**changes):
    """conf/loss/contrastive.yaml's `loss` section with `changes`: every key the training code reads."""
    return OmegaConf.merge(OmegaConf.load(CONF / "loss" / "contrastive.yaml"), changes)


LOSS = loss_section(lambda_d=1e-3, lambda_q=1e-3, warmup_steps=2)
OPTIM = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0, "warmup_steps": 1})
LORA_DEFAULTS = OmegaConf.load(CONF / "lora" / "lora.yaml")
STEPS = 4
ITEMS = [{"query": "cat sat", "documents": ["the cat sat on the mat", "blue car on road"]},
         {"query": "moon star", "documents": ["sun moon star", "green tree house"]}] * STEPS


def tiny_tokenizer() -> BertTokenizerFast:
    tokenizer = word_tokenizer()
    assert tokenizer.convert_tokens_to_ids("cat") != tokenizer.unk_token_id
    return tokenizer


def lora_cfg(**overrides):
    return OmegaConf.merge(LORA_DEFAULTS, {"r": 4, "alpha": 4, "dropout": 0.0}, overrides)


def train_steps(masked_lm, tokenizer) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from splade_peft.data.pairs import TrainingCollator
    from splade_peft.model.adapters import adapter_callbacks
    from splade_peft.model.encoder import SpladeEncoder
    from splade_peft.training.module import SpladeModule

    encoder = SpladeEncoder(masked_lm)
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=adapter_callbacks(masked_lm))
    loader = DataLoader(ITEMS, batch_size=2, collate_fn=TrainingCollator(tokenizer, 8, 16))
    encoder.train()
    trainer.fit(SpladeModule(encoder, LOSS, OPTIM), loader)


def sparse_vectors(masked_lm, tokenizer):
    import torch

    from splade_peft.model.encoder import SpladeEncoder

    batch = tokenizer(["the cat sat on the mat", "sun moon star over the green tree"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return SpladeEncoder(masked_lm.eval())(batch["input_ids"], batch["attention_mask"])


# --- W&B offline runs -------------------------------------------------------------------------------------------

def wandb_offline_records(folder: Path, timeout_s: float = 30.0) -> list:
    """Every record (run, config, metric, summary, artifact, ...) of the offline W&B runs under
    <folder>/wandb/offline-run-*/, as wandb's protobuf Record objects, once each run's exit record is written
    (wandb's service process may still be flushing when wandb.finish returns).
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        paths = sorted(Path(folder).glob("wandb/offline-run-*/run-*.wandb"))
        runs = [read_wandb_file(path) for path in paths]
        if all(any(r.WhichOneof("record_type") == "exit" for r in run) for run in runs) or time.monotonic() > deadline:
            return [record for run in runs for record in run]
        time.sleep(0.2)


def read_wandb_file(path: Path) -> list:
    """wandb 0.31 ships no Python reader for its .wandb files; they are a LevelDB-style log: a 7-byte header,
    then 32 KiB blocks of chunks (checksum, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    block, records = 32768, []
    data, position, chunks = path.read_bytes(), 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        length, kind = struct.unpack_from("<HB", data, position + 4) if left >= 7 else (0, 0)
        if left < 7 or (length, kind) == (0, 0):  # block trailer or padding
            position += left
            continue
        if position + 7 + length > len(data):  # the writer is still flushing this chunk: read it next time
            break
        chunks += data[position + 7: position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(chunks)
            except DecodeError:  # a chunk the writer has sized but not yet filled
                break
            records.append(record)
            chunks = b""
    return records


def wandb_records_of(records: list, kind: str) -> list:
    """The payloads of one record type ("run", "metric", "summary", "artifact", "config", ...)."""
    return [getattr(record, kind) for record in records if record.WhichOneof("record_type") == kind]


def submitit_sweep_with_plugin(tmp_path: Path, plugin: str, code: str, *overrides: str,
                               env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """(the finished command, its sweep folder) of `python -m splade_peft -m` through the project's local submitit
    launcher, with `code` importable as the module `plugin` and named in the root key `plugins`: the job imports it
    as it validates its config, in the process submitit starts for it (a fault injected there is the job's own)."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{plugin}.py").write_text(code)
    sweep_dir = tmp_path / "sweep"
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", "-m", "hydra/launcher=local_submitit", f"hydra.sweep.dir={sweep_dir}",
         f"plugins=[{plugin}]", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {}), "PYTHONPATH": f"{tmp_path / 'plugins'}:{REPO}"},
    )
    return completed, sweep_dir
