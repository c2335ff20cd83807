"""Teacher scores {query_id: {doc_id: score}}: score files, ensembles of them, and their safe conversion.

Formats, by suffix: `.json` / `.json.gz` ({qid: {pid: score}}), `.parquet` (columns query_id, doc_id,
score), `.jsonl` (a FlagEmbedding file written by `python -m splade_peft.mine`: its pos/neg scores) and, only with an explicit opt-in because unpickling runs arbitrary code, `.pkl` / `.pkl.gz`
(the sentence-transformers MS MARCO cross-encoder score file). Convert a pickle once and train on the result:
    python -m splade_peft.data.teachers scores.pkl.gz scores.parquet --allow-pickle
"""

import argparse
import gzip
import json
import logging
import math
import pickle
import statistics
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from splade_peft.errors import ConfigError, DataError
from splade_peft.records import write_json_atomic

log = logging.getLogger(__name__)

Scores = dict[str, dict[str, float]]
FORMATS = "a .json[.gz], .parquet, mined FlagEmbedding .jsonl[.gz] or (with data.teacher.allow_pickle=true) .pkl[.gz] file"


def file_kind(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1].lstrip(".") if suffixes else ""
    if kind == "pickle":
        return "pkl"
    if kind not in ("json", "jsonl", "parquet", "pkl"):
        raise DataError(path, f"unknown teacher score format '{kind or path.name}'", fix=f"use {FORMATS}")
    return kind


def open_maybe_gzip(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def load_score_file(path: str | Path, allow_pickle: bool = False) -> Scores:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "teacher score file not found", fix=f"give {FORMATS}")
    kind = file_kind(path)
    if kind == "parquet":
        return parquet_scores(path)
    if kind == "jsonl":
        return flagembedding_scores(path)
    if kind == "pkl":
        if not allow_pickle:
            raise ConfigError("data.teacher.allow_pickle", f"{path} is a pickle, which can run code when loaded",
                              "convert it once with `python -m splade_peft.data.teachers IN.pkl OUT.parquet "
                              "--allow-pickle`, or set data.teacher.allow_pickle=true if you trust the file")
        warnings.warn(f"unpickling teacher scores from {path} (data.teacher.allow_pickle=true)", stacklevel=2)
        with open_maybe_gzip(path) as stream:
            return checked_mapping(path, pickle.load(stream))
    with open_maybe_gzip(path) as stream:
        try:
            return checked_mapping(path, json.load(stream))
        except json.JSONDecodeError as error:
            raise DataError(path, f"invalid JSON ({error.msg})", error.lineno, fix="write {qid: {pid: score}}") from None


def checked_mapping(path: Path, raw) -> Scores:
    """Keys as strings (the MS MARCO pickle uses ints), scores as finite floats."""
    if not isinstance(raw, Mapping):
        raise DataError(path, f"a {type(raw).__name__}, not a mapping", fix="write {qid: {pid: score}}")
    scores: Scores = {}
    for query_id, by_doc in raw.items():
        if not isinstance(by_doc, Mapping):
            raise DataError(path, f"query '{query_id}' maps to a {type(by_doc).__name__}", field=str(query_id),
                            fix="write {qid: {pid: score}}")
        scores[str(query_id)] = {str(doc_id): finite_score(path, query_id, doc_id, s) for doc_id, s in by_doc.items()}
    return scores


def finite_score(path: Path, query_id, doc_id, score) -> float:
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DataError(path, f"score {score!r} of ({query_id}, {doc_id}) is not a finite number",
                        field=f"{query_id}/{doc_id}", fix="write finite numeric scores")
    return float(score)


def parquet_scores(path: Path) -> Scores:
    table = pq.read_table(path)
    missing = {"query_id", "doc_id", "score"} - set(table.column_names)
    if missing:
        raise DataError(path, f"no column(s) {', '.join(sorted(missing))}", field=sorted(missing)[0],
                        fix="write columns query_id, doc_id, score")
    scores: Scores = {}
    for query_id, doc_id, score in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "score"))):
        scores.setdefault(str(query_id), {})[str(doc_id)] = finite_score(path, query_id, doc_id, score)
    return scores


def required_list(path: Path, line: int, record: dict, field: str, kind: type | tuple[type, ...]) -> list:
    value = record.get(field)
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise DataError(path, "missing or not a list of the right type", line, field,
                        fix=f"give every line a list '{field}'")
    return value


def record_scores(path: Path, line: int, record: dict) -> dict[str, float]:
    """{doc_id: score} of one FlagEmbedding line that carries ids (pos_ids/neg_ids) beside its scores."""
    scores = {}
    for ids_field, scores_field in (("pos_ids", "pos_scores"), ("neg_ids", "neg_scores")):
        ids = required_list(path, line, record, ids_field, (str, int))
        values = required_list(path, line, record, scores_field, (int, float))
        if len(values) != len(ids):
            raise DataError(path, f"{len(values)} scores for {len(ids)} ids in '{ids_field}'", line, scores_field,
                            fix="give one score per document")
        scores.update(zip(map(str, ids), (finite_score(path, record.get("query_id"), d, v) for d, v in zip(ids, values))))
    return scores


def flagembedding_scores(path: Path) -> Scores:
    """The teacher scores of a mined FlagEmbedding file (lines with query_id, pos_ids, neg_ids)."""
    scores: Scores = {}
    with open_maybe_gzip(path) as stream:
        for line, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as error:
                raise DataError(path, f"invalid JSON ({error.msg})", line, fix="write one JSON object per line") from None
            if not isinstance(record, dict) or "query_id" not in record:
                raise DataError(path, "no query_id to align the scores with", line, "query_id",
                                fix="mine it with `python -m splade_peft.mine`")
            scores.setdefault(str(record["query_id"]), {}).update(record_scores(path, line, record))
    return scores


def write_score_file(scores: Scores, path: str | Path) -> None:
    path = Path(path)
    if file_kind(path) == "parquet":
        rows = [(q, d, s) for q, by_doc in scores.items() for d, s in by_doc.items()]
        table = pa.table({"query_id": [r[0] for r in rows], "doc_id": [r[1] for r in rows], "score": [r[2] for r in rows]})
        pq.write_table(table, path)
    elif file_kind(path) == "json" and path.suffix != ".gz":
        write_json_atomic(path, scores)
    else:
        raise DataError(path, "can only write .json or .parquet", fix="name the output *.json or *.parquet")


def normalised(scores: Scores) -> Scores:
    """Per query, (score - mean) / std over the documents the teacher scored (the `zscore_mean` rule: every
    query's margins end on unit spread, whatever the teacher's confidence or the student's scale)."""
    result = {}
    for query_id, by_doc in scores.items():
        values = list(by_doc.values())
        mean = statistics.fmean(values)
        spread = statistics.pstdev(values) or 1.0
        result[query_id] = {doc_id: (s - mean) / spread for doc_id, s in by_doc.items()}
    return result


def shared_pairs(teachers: list[Scores]) -> list[Scores]:
    """Each teacher restricted to the (query, document) pairs every teacher scored."""
    query_ids = set.intersection(*(set(t) for t in teachers))
    doc_ids = {q: set.intersection(*(set(t[q]) for t in teachers)) for q in query_ids}
    return [{q: {d: t[q][d] for d in doc_ids[q]} for q in query_ids} for t in teachers]


def within_query_spread(scores: Scores) -> float:
    """The standard deviation of the scores around their query's mean, pooled over every query: the size of
    the margins the teacher teaches (MarginMSE and KL see only differences within a query)."""
    squares, count = 0.0, 0
    for by_doc in scores.values():
        mean = statistics.fmean(by_doc.values()) if by_doc else 0.0
        squares += sum((s - mean) ** 2 for s in by_doc.values())
        count += len(by_doc)
    return math.sqrt(squares / count) if count else 0.0


def scaled(scores: Scores, factor: float) -> Scores:
    """Every query's scores spread `factor` times as wide around their query mean (the mean stays)."""
    result = {}
    for query_id, by_doc in scores.items():
        mean = statistics.fmean(by_doc.values()) if by_doc else 0.0
        result[query_id] = {d: mean + factor * (s - mean) for d, s in by_doc.items()}
    return result


def weighted_mean(members: list[Scores], weights: list[float]) -> Scores:
    total = sum(weights)
    return {q: {d: sum(w * m[q][d] for m, w in zip(members, weights)) / total for d in by_doc}
            for q, by_doc in members[0].items()}


def aligned(members: list[Scores], weights: list[float], reference: int) -> Scores:
    """The `aligned` rule: each teacher brought to the reference's within-query spread by one global factor
    (not per query: a query where a teacher is sure keeps its wider margins), the weighted mean taken, and
    that mean widened back to the reference's spread, since averaging teachers that disagree narrows it.
    The result has the reference's scale, so the student, whose scale the reference shares, is taught
    margins it can match rather than z-scores an order of magnitude smaller."""
    target = within_query_spread(members[reference])
    unit = [scaled(m, 1.0 / (within_query_spread(m) or 1.0)) for m in members]
    combined = weighted_mean(unit, weights)
    factor = target / (within_query_spread(combined) or 1.0)
    log.info("teacher ensemble (aligned to teacher %d): within-query spreads %s, mean widened x%.3g",
             reference, ", ".join(f"{within_query_spread(m):.3g}" for m in members), factor)
    return scaled(combined, factor)


def checked_weights(weights: list[float] | None, teachers: int) -> list[float]:
    if not weights:
        return [1.0] * teachers
    weights = [float(w) for w in weights]
    if len(weights) != teachers or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError("data.teacher.weights", f"{weights} for {teachers} teacher(s)",
                          "give one weight >= 0 per teacher (files first, then scorers), not all 0, or [] for equal")
    return weights


def ensemble(teachers: list[Scores], rule: str = "aligned", weights: list[float] | None = None,
             reference: int = 0) -> Scores:
    """One score per (query, document) that every teacher scored, the weighted mean of the teachers' scores:
    under `aligned` on the scale of teacher `reference` (see `aligned`), under `zscore_mean` each
    normalised per query first (unit spread: a student at SPLADE's scale then mostly learns to shrink its
    scores), under `mean` as they are. A pair some teacher lacks is left out (then handled by
    data.teacher.missing), never filled with a made-up score. A single teacher is returned as it is."""
    weights = checked_weights(weights, len(teachers))
    if len(teachers) == 1:
        return teachers[0]
    if rule == "zscore_mean":  # z-scores over all a teacher scored, as before pairs were shared out
        return weighted_mean(shared_pairs([normalised(t) for t in teachers]), weights)
    members = shared_pairs(teachers)
    return aligned(members, weights, reference) if rule == "aligned" else weighted_mean(members, weights)


def check_same_dataset(scores: Scores, query_ids: Iterable[str], origin: str) -> None:
    """A teacher file sharing no query id with the training queries is for another dataset."""
    query_ids = list(query_ids)
    if query_ids and not any(query_id in scores for query_id in query_ids):
        raise DataError(origin, f"scores none of the {len(query_ids)} training queries (e.g. '{query_ids[0]}'): "
                        "a teacher file for another dataset?", fix="give the teacher file of this training set")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a teacher score file (e.g. a pickle) to JSON or Parquet.")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path, help="*.json or *.parquet")
    parser.add_argument("--allow-pickle", action="store_true", help="unpickle the source: only for a file you trust")
    arguments = parser.parse_args(argv)
    scores = load_score_file(arguments.source, allow_pickle=arguments.allow_pickle)
    write_score_file(scores, arguments.target)
    print(f"{arguments.target}: {sum(map(len, scores.values()))} scores of {len(scores)} queries")


if __name__ == "__main__":
    main()
