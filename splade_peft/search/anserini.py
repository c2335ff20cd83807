"""Run Anserini's batch searcher (`io.anserini.search.SearchCollection`) in a Java subprocess.

The JVM never runs inside the Python process: an embedded JVM installs its own SIGSEGV handling,
which crashes a process that later runs PyTorch. Each call writes the topics to a scratch folder,
runs one `java` process over them (one per batch if they are huge) and reads back the TREC run it
writes. The JVM's start-up costs ~2-3 s per process, so callers should search all queries at once.

Topics are written as `TsvInt`: one `<position><TAB><text>` line per query, so the caller's query ids
(which may contain anything) never reach Java. The reader splits each line on tabs and trims it,
so a text must not contain tabs or line breaks and must not trim to nothing (see `tsv_safe`).

Lucene refuses a BooleanQuery of more than 1,024 clauses (one per distinct query term) and neither
Anserini nor Lucene reads a flag or system property to raise that limit. So the process starts a
tiny launcher class, generated below as raw class-file bytes (no Java compiler is needed), that calls
`IndexSearcher.setMaxClauseCount(MAX_QUERY_TERMS)` and then `SearchCollection.main(args)`.

SearchCollection exits with status 0 even when a query throws (it prints the stack trace and goes
on) or when an argument is rejected (it prints "Error: ..."), so the output is checked for both.
"""

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from splade_peft.errors import IndexingError
from splade_peft.index.pyserini_env import anserini_jar, java_binary, java_complaint
from splade_peft.search.runs import read_trec_run

# An untrained or lightly regularised SPLADE model can put weight on the whole vocabulary (~30k terms).
MAX_QUERY_TERMS = 1 << 20
# Topic text per java call: bounds the scratch file and Java's heap when queries are huge (an impact
# query repeats each term by its weight: 30k terms x weight ~150 is ~30 MB of text), at the cost of
# one more JVM start (~2-3 s) per batch. Ordinary query sets fit in one batch.
MAX_BATCH_CHARS = 1 << 27

_LAUNCHER = "SpladePeftSearchCollection"
_TOPICS = "topics.tsv"
_RUN = "run.trec"
# Java's String.trim() strips every char <= U+0020; BufferedReader.readLine() ends lines at \n and \r.
JAVA_TRIMMED = "".join(chr(code) for code in range(0x21))
_TSV_BREAKERS = re.compile(r"[\t\n\r]")
_STACK_FRAME = re.compile(r"^\s+at \S+\(", re.MULTILINE)
_ERROR_LINE = re.compile(r"^Error: ", re.MULTILINE)


def tsv_safe(text: str) -> str:
    """`text` with tabs and line breaks turned into spaces, so it stays one field of one topic line."""
    return _TSV_BREAKERS.sub(" ", text)


def sendable(text: str) -> bool:
    """False for a topic text that Java would trim to nothing (the TsvInt reader would crash on it)."""
    return bool(text.strip(JAVA_TRIMMED))


def search_collection(index_dir: Path, topics: Iterable[str], k: int, threads: int,
                      flags: Sequence[str]) -> dict[int, list[tuple[str, float]]]:
    """Search `topics` (each `tsv_safe` and `sendable`) with SearchCollection `flags` (ranking model...).

    Returns `{position in topics: [(docid, score), ...]}` in Anserini's rank order, for the topics
    with at least one hit (a topic without hits has no line in the run file). `topics` is consumed
    lazily and searched in batches of at most about `MAX_BATCH_CHARS` characters, one `java` each.
    """
    hits: dict[int, list[tuple[str, float]]] = {}
    batch: list[tuple[int, str]] = []
    chars = 0
    for position, text in enumerate(topics):
        if not sendable(text) or _TSV_BREAKERS.search(text):
            raise ValueError(f"topic {position} {text[:80]!r} is blank or holds a tab or line break")
        batch.append((position, text))
        chars += len(text)
        if chars >= MAX_BATCH_CHARS:
            hits |= _search_batch(index_dir, batch, k, threads, flags)
            batch, chars = [], 0
    if batch:
        hits |= _search_batch(index_dir, batch, k, threads, flags)
    return hits


def _search_batch(index_dir: Path, batch: list[tuple[int, str]], k: int, threads: int,
                  flags: Sequence[str]) -> dict[int, list[tuple[str, float]]]:
    with tempfile.TemporaryDirectory(prefix="splade-peft-search.") as scratch:
        folder = Path(scratch)
        with open(folder / _TOPICS, "w", encoding="utf-8", newline="\n") as out:
            for position, text in batch:
                out.write(f"{position}\t{text}\n")
        (folder / f"{_LAUNCHER}.class").write_bytes(_launcher_class(MAX_QUERY_TERMS))
        # Relative topic/run paths (cwd=scratch): SearchCollection switches on special behaviour when
        # the topics path contains certain dataset names, which a temp folder's path could by chance.
        command = [str(java_binary()), "-cp", f"{folder}{os.pathsep}{anserini_jar()}", _LAUNCHER,
                   "-index", str(Path(index_dir).resolve()), "-topics", _TOPICS, "-topicReader", "TsvInt",
                   "-output", _RUN, "-hits", str(k), "-threads", str(max(1, threads)), *flags]
        finished = subprocess.run(command, cwd=folder, capture_output=True, text=True, errors="replace",
                                  check=False)
        output = finished.stdout + "\n" + finished.stderr
        if finished.returncode != 0 or _STACK_FRAME.search(output) or _ERROR_LINE.search(output):
            raise IndexingError(f"Anserini SearchCollection failed (exit {finished.returncode}) on {index_dir}: "
                                f"{java_complaint(output)}")
        if not (folder / _RUN).is_file():
            raise IndexingError(f"Anserini SearchCollection wrote no run for {index_dir}: {java_complaint(output)}")
        return {int(topic): ranked for topic, ranked in read_trec_run(folder / _RUN).items()}


def _launcher_class(max_clauses: int) -> bytes:
    """Class file of `public class SpladePeftSearchCollection` whose only method is

        public static void main(String[] args) {
            org.apache.lucene.search.IndexSearcher.setMaxClauseCount(max_clauses);
            io.anserini.search.SearchCollection.main(args);
        }

    (Java 8 class-file format; straight-line code needs no stack map table.)
    """
    def utf8(text: str) -> bytes:
        data = text.encode()
        return struct.pack(">BH", 1, len(data)) + data

    constants = [  # index in the constant pool = position + 1
        utf8(_LAUNCHER),                                   # 1
        struct.pack(">BH", 7, 1),                          # 2  class: this
        utf8("java/lang/Object"),                          # 3
        struct.pack(">BH", 7, 3),                          # 4  class: super
        utf8("main"),                                      # 5
        utf8("([Ljava/lang/String;)V"),                    # 6
        utf8("Code"),                                      # 7
        utf8("org/apache/lucene/search/IndexSearcher"),    # 8
        struct.pack(">BH", 7, 8),                          # 9
        utf8("setMaxClauseCount"),                         # 10
        utf8("(I)V"),                                      # 11
        struct.pack(">BHH", 12, 10, 11),                   # 12 name and type
        struct.pack(">BHH", 10, 9, 12),                    # 13 method: IndexSearcher.setMaxClauseCount
        utf8("io/anserini/search/SearchCollection"),       # 14
        struct.pack(">BH", 7, 14),                         # 15
        struct.pack(">BHH", 12, 5, 6),                     # 16
        struct.pack(">BHH", 10, 15, 16),                   # 17 method: SearchCollection.main
        struct.pack(">Bi", 3, max_clauses),                # 18 int constant
    ]
    ldc, invokestatic, aload_0, return_ = 0x12, 0xB8, 0x2A, 0xB1
    code = bytes([ldc, 18, invokestatic, 0, 13, aload_0, invokestatic, 0, 17, return_])
    code_attribute = struct.pack(">HHI", 1, 1, len(code)) + code + struct.pack(">HH", 0, 0)  # stack, locals
    public_static, public_super = 0x0009, 0x0021
    method = struct.pack(">HHHHHI", public_static, 5, 6, 1, 7, len(code_attribute)) + code_attribute
    header = struct.pack(">IHHH", 0xCAFEBABE, 0, 52, len(constants) + 1)
    body = struct.pack(">HHHHHH", public_super, 2, 4, 0, 0, 1) + method + struct.pack(">H", 0)
    return header + b"".join(constants) + body
