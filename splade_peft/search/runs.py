"""TREC run files: `qid Q0 docid rank score tag`, one hit per line, ranks from 1.

Queries without hits cannot be represented in the format, so they do not survive a round trip.
"""

from pathlib import Path

from splade_peft.errors import DataError
from splade_peft.records import staged

Run = dict[str, list[tuple[str, float]]]


def without_self_hits(run: Run, k: int | None = None) -> Run:
    """The run without hits whose document id is the query's own id (BEIR's `ignore_identical_ids`, for
    collections such as ArguAna and Quora whose queries are also documents), cut to `k` hits per query.

    Engines asked for k + 1 hits still return k after the query's own document is dropped, as BEIR does."""
    return {qid: [(docid, score) for docid, score in hits if docid != qid][:k] for qid, hits in run.items()}


def write_trec_run(run: Run, path: Path, tag: str) -> None:
    """Write hits in the order given (searchers return them best first); atomic via a temp file."""
    path = Path(path)
    _check_field("tag", tag)
    with staged(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for qid, hits in run.items():
            _check_field("query id", qid)
            for rank, (docid, score) in enumerate(hits, start=1):
                _check_field("document id", docid)
                # repr() round-trips the float exactly; integer impact scores stay exact.
                out.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")


def read_trec_run(path: Path) -> Run:
    """Read a run; each query's hits come back ordered by rank."""
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                qid, rank, docid, score = _parse_line(path, number, line)
                ranked.setdefault(qid, []).append((rank, docid, score))
    return {qid: [(docid, score) for _, docid, score in sorted(hits)] for qid, hits in ranked.items()}


def _parse_line(path: Path, number: int, line: str) -> tuple[str, int, str, float]:
    fields = line.split()
    if len(fields) != 6:
        raise DataError(path, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}", line=number,
                        fix="rewrite the run with write_trec_run")
    qid, _, docid, rank, score, _ = fields
    try:
        return qid, int(rank), docid, float(score)
    except ValueError:
        raise DataError(path, f"rank {rank!r} or score {score!r} is not a number", line=number,
                        fix="rewrite the run with write_trec_run") from None


def _check_field(name: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{name} {value!r} is empty or contains whitespace; TREC run fields are space-separated")
