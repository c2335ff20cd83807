"""What is written next to every result: atomic files, completed-stage markers, versions, fingerprints."""

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "peft", "lightning", "pyserini", "hydra-core", "omegaconf", "ir-measures", "wandb")
SECRET_NAME = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET)", re.IGNORECASE)
REDACTED = "<redacted>"


def write_json_atomic(path: Path, payload) -> None:
    """Write to a temporary name, then rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(staging, path)


def fingerprint(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mapping_fingerprint(texts: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(texts):
        digest.update(key.encode() + b"\x1f" + texts[key].encode() + b"\x1e")
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """Hash of a model folder's file names, sizes and the bytes of its small files (configs, tokenizer)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}".encode())
        if path.stat().st_size < 4_000_000:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def redact(payload):
    """Replace the values of keys that look like credentials, at any depth."""
    if isinstance(payload, Mapping):
        return {k: REDACTED if SECRET_NAME.search(str(k)) and v else redact(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [redact(item) for item in payload]
    return payload


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "not installed"
    versions["splade_peft_commit"] = COMMIT_AT_START
    return versions


def git_commit() -> str:
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return found.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Read once: a sweep process keeps running the code it started with, whatever HEAD says later.
COMMIT_AT_START = git_commit()


class StageStore:
    """Stage outputs under one root; a stage counts as complete only when its marker names the same inputs.

    A stage is produced in `<name>.partial` and renamed into place once its marker is written, so an
    interrupted stage leaves nothing that a rerun would trust, and a stage whose inputs changed is redone.
    """

    MARKER = "_complete.json"

    def __init__(self, root: Path):
        self.root = Path(root)

    def run(self, name: str, inputs: Mapping, produce: Callable[[Path], dict]) -> tuple[Path, dict]:
        folder, inputs_fingerprint = self.root / name, fingerprint(inputs)
        marker = folder / self.MARKER
        if marker.exists():
            recorded = json.loads(marker.read_text())
            if recorded["inputs_fingerprint"] == inputs_fingerprint:
                return folder, recorded["summary"]
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        summary = produce(staging)
        write_json_atomic(staging / self.MARKER, {"inputs_fingerprint": inputs_fingerprint, "inputs": inputs, "summary": summary})
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return folder, summary
