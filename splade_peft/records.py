"""What is written next to every result: atomic files, completed-stage markers, versions, fingerprints."""

import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "peft", "lightning", "pyserini", "hydra-core", "omegaconf", "ir-measures", "wandb")
# Names that hold credentials: *_KEY, *_TOKEN (not tokens_per_batch), anything with PASSWORD or SECRET in it.
SECRET_NAME = re.compile(r"(^|[_.\-])(api_?)?(key|token)$|passw(or)?d|secret|credential", re.IGNORECASE)
OVERRIDE = re.compile(r"^(?P<key>[~+]*[\w.\-/@]+)=(?P<value>.*)$", re.DOTALL)
REDACTED = "<redacted>"
# Shorter values would also match ordinary words; real tokens are long.
MIN_SECRET_LENGTH = 8


@contextmanager
def staged(path: Path, folder: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write (an empty folder when `folder`), then move it into place
    in one rename, so a reader never sees a half-written file or folder; on failure it is removed.

    Staging names are unique: concurrent writers of the same path (jobs of one sweep filling a shared
    cache) never write into each other's staging. A folder already at `path` is replaced (os.replace
    cannot replace a non-empty folder), or kept when `keep_existing` (another writer published the same
    deterministic build first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling(path, "tmp")
    if folder:
        staging.mkdir()
    try:
        yield staging
    except BaseException:
        remove(staging)
        raise
    publish(staging, path, keep_existing)


class StageBusy(Exception):
    """Another process holds the stage's lock: it is producing that stage now."""


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold an inter-process lock on `path` (a hidden `.<name>.lock` beside it): parallel jobs of a sweep that
    would build the same cache entry take turns, and the later one finds it built instead of replacing it
    while the first reads it. Without `wait`, StageBusy when another process holds it. The lock is the
    kernel's (flock): a process that dies releases it, so a killed job leaves no stale lock behind."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(f".{path.name}.lock"), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout as busy:
        raise StageBusy(str(path)) from busy
    try:
        yield
    finally:
        lock.release()


def sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish(staging: Path, path: Path, keep_existing: bool) -> None:
    if keep_existing and path.exists():
        remove(staging)
        return
    if not (staging.is_dir() and path.is_dir()):
        try:
            os.replace(staging, path)
        except OSError:
            remove(staging)
            if not (keep_existing and path.exists()):  # not merely beaten to it by another writer
                raise
        return
    # A folder over a folder: the old one is moved aside first, then deleted once the new one is in place.
    old = sibling(path, "old")
    os.replace(path, old)
    os.replace(staging, path)
    remove(old)


def write_json_atomic(path: Path, payload) -> None:
    with staged(path) as staging:
        staging.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def fingerprint(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stable_seed(*parts) -> int:
    """A seed derived from its parts alone: the same on every run, process and machine (unlike hash())."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


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


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name.rsplit(".", 1)[-1]))


def secret_values() -> list[str]:
    """Values of environment variables named like credentials (WANDB_API_KEY, HF_TOKEN, DB_PASSWORD, ...)."""
    return sorted(
        (value for name, value in os.environ.items() if is_secret_name(name) and len(value) >= MIN_SECRET_LENGTH),
        key=len, reverse=True,
    )


def redact(payload):
    """Hide credentials at any depth: values of keys named like one, `key=value` overrides naming one, and
    the values of credential environment variables wherever they appear in a string."""
    if isinstance(payload, Mapping):
        return {k: REDACTED if is_secret_name(str(k)) and v else redact(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [redact(item) for item in payload]
    if isinstance(payload, str):
        return redact_text(payload)
    return payload


def redact_text(text: str) -> str:
    override = OVERRIDE.match(text)
    if override and is_secret_name(override["key"]) and override["value"]:
        return f"{override['key']}={REDACTED}"
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return text


def redact_saved_config(folder: Path) -> None:
    """Rewrite Hydra's saved config (`.hydra/*.yaml`, written before the job starts) with credentials hidden."""
    from omegaconf import OmegaConf

    for path in Path(folder).glob("*.yaml"):
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        redacted = redact(saved)
        if redacted != saved:
            OmegaConf.save(OmegaConf.create(redacted), path)


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

    A stage is produced in a staging folder and renamed into place once its marker is written, so an
    interrupted stage leaves nothing that a rerun would trust, and a stage whose inputs changed is redone.
    """

    MARKER = "_complete.json"

    def __init__(self, root: Path):
        self.root = Path(root)

    def completed(self, name: str, inputs: Mapping) -> dict | None:
        """The summary of stage `name` if it completed with these inputs, else None."""
        marker = self.root / name / self.MARKER
        if marker.exists():
            recorded = json.loads(marker.read_text())
            if recorded["inputs_fingerprint"] == fingerprint(inputs):
                return recorded["summary"]
        return None

    def run(self, name: str, inputs: Mapping, produce: Callable[[Path], dict], wait: bool = True) -> tuple[Path, dict]:
        """(the stage's folder, its summary), produced unless complete. A parallel job producing the same stage
        finishes first and this one reuses it; without `wait`, StageBusy while that job is at it."""
        folder, inputs_fingerprint = self.root / name, fingerprint(inputs)
        if not wait and (summary := self.completed(name, inputs)) is not None:
            return folder, summary
        with locked(folder, wait):
            if (summary := self.completed(name, inputs)) is not None:
                return folder, summary
            with staged(folder, folder=True) as staging:
                summary = produce(staging)
                write_json_atomic(staging / self.MARKER, {"inputs_fingerprint": inputs_fingerprint, "inputs": inputs, "summary": summary})
        return folder, summary
