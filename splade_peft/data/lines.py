"""Line-oriented files read lazily: memory-mapped and indexed by line offsets, parsed only when asked."""

import json
import mmap
from pathlib import Path

import numpy as np

from splade_peft.errors import DataError


class MappedLines:
    """The non-blank lines of a file, memory-mapped: `lines[i]` decodes line i only when asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "file not found")
        with self.path.open("rb") as stream:
            self.buffer = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if self.path.stat().st_size else b""
        ends = np.flatnonzero(np.frombuffer(self.buffer, dtype=np.uint8) == ord("\n")) + 1 if len(self.buffer) else np.array([], dtype=np.int64)
        starts = np.concatenate([[0], ends])
        stops = np.concatenate([ends, [len(self.buffer)]])
        non_blank = [i for i in range(len(starts)) if self.buffer[starts[i]:stops[i]].strip()]
        self.starts, self.stops, self.numbers = starts[non_blank], stops[non_blank], np.array(non_blank) + 1

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[int, str]:
        """(1-based line number in the file, text)."""
        raw = self.buffer[self.starts[index]:self.stops[index]]
        try:
            return int(self.numbers[index]), raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise DataError(self.path, "bytes that are not UTF-8", int(self.numbers[index]), fix="re-encode as UTF-8") from None

    def json(self, index: int) -> tuple[int, dict]:
        line, text = self[index]
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(self.path, f"invalid JSON ({error.msg})", line, fix="write one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataError(self.path, "not a JSON object", line, fix="write one JSON object per line")
        return line, record
