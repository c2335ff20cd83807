"""The project's own errors: each one names what is wrong and how to fix it, in one line."""

import errno


class SpladePeftError(Exception):
    """Base class: caught by the entry point, printed as one line, recorded in results.json."""


class ConfigError(SpladePeftError):
    """A config key has a value the project cannot use. Message names the key path and the allowed values."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f"config key '{key}': {problem} -- {fix}")


class DataError(SpladePeftError):
    """A data file cannot be used as it is. Message names the file (and line/field when known) and the fix."""

    def __init__(self, path, problem: str, line: int | None = None, field: str | None = None, fix: str = ""):
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f", line {line}" if line is not None else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}" + (f" -- {fix}" if fix else ""))


class MissingCheckpointError(SpladePeftError):
    """An offline checkpoint has not been fetched yet."""


class IndexingError(SpladePeftError):
    """Pyserini/Anserini could not build or open an index."""


class TrainingDivergedError(SpladePeftError):
    """The loss became NaN or infinite."""


class VectorsCollapsedError(TrainingDivergedError):
    """A sparse encoder's vectors became empty or filled every dimension (training.collapse_stop)."""


# Write errors that mean "no room": a full disk, an exhausted quota, a file-size limit.
NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def describe_failure(error: BaseException) -> str:
    """The one line results.json records for a failed job: the cause first, then what to do about it."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return (f"out of memory ({type(error).__name__}: {error}) -- lower data.batch_size, index.tokens_per_batch "
                "or index.max_batch_size")
    if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
        where = f" writing {error.filename}" if error.filename else ""
        return f"disk full{where} ({error.strerror or error}) -- free space under paths.outputs and paths.cache, then rerun"
    return f"{type(error).__name__}: {error}"
