"""The training items of a job: (query, positive, negatives) from the collection's qrels or a hard-negative
file, negatives mined by BM25 or drawn at random, scored by the data.teacher ensemble. Built from the
`data` section alone; where BM25 runs and teacher scores are computed and kept is a ScoringWorkspace."""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from torch.utils.data import Dataset

from splade_peft.data.collection import Collection
from splade_peft.data.config import NEGATIVE_SOURCES, TEACHER_SCORERS
from splade_peft.data.hard_negatives import (
    FlagEmbeddingSet, TriplesSet, flagembedding_candidates, st_hard_negative_candidates,
)
from splade_peft.data.pairs import (
    TrainingPair, TrainingSet, bm25_candidates, random_candidates, teacher_scored_pairs, training_pairs,
)
from splade_peft.data.teachers import Scores, check_same_dataset, ensemble, load_score_file
from splade_peft.search.bm25 import cached_bm25_run


@dataclass(frozen=True)
class ScoringWorkspace:
    """Where the computed inputs of the training data come from: BM25 runs and teacher scores kept under
    `cache_dir` (paths.cache), BM25 searched with `search_threads` (eval.search_threads), a teacher
    checkpoint run on the device and precision of `trainer` (the trainer section)."""

    cache_dir: str | Path
    search_threads: int
    trainer: DictConfig


# Each negatives source: (collection, data section, seed, workspace) -> {query id: candidate document ids}.

@NEGATIVE_SOURCES.register("file", from_file=True)
def mined_file(collection: Collection, data: DictConfig, seed: int, workspace: ScoringWorkspace) -> dict:
    return flagembedding_candidates(data.negatives_file, collection, data.unknown_ids)[0]


@NEGATIVE_SOURCES.register("st_hard_negatives", from_file=True)
def st_hard_negatives(collection: Collection, data: DictConfig, seed: int, workspace: ScoringWorkspace) -> dict:
    systems = data.hard_negative_systems
    return st_hard_negative_candidates(data.negatives_file, list(systems) if systems else None, data.negatives_depth)


@NEGATIVE_SOURCES.register("random")
def random_negatives(collection: Collection, data: DictConfig, seed: int, workspace: ScoringWorkspace) -> dict:
    return random_candidates(collection, data.negatives_depth, seed)


@NEGATIVE_SOURCES.register("bm25")
def bm25_negatives(collection: Collection, data: DictConfig, seed: int, workspace: ScoringWorkspace) -> dict:
    deepest_judged = max(len(judged) for judged in collection.qrels.values())
    run, _ = cached_bm25_run(collection, workspace.cache_dir, data.negatives_depth + deepest_judged,
                             workspace.search_threads)
    return bm25_candidates(collection, run, data.negatives_depth)


def negative_candidates(collection: Collection, data: DictConfig, seed: int, workspace: ScoringWorkspace) -> dict:
    return NEGATIVE_SOURCES[data.negatives_source](collection, data, seed, workspace)


def teacher_pairs(pairs: list[TrainingPair]) -> dict[str, list[str]]:
    """{query id: sorted ids of its positives and candidates}: every pair a scorer must score."""
    wanted: dict[str, set] = {}
    for pair in pairs:
        wanted.setdefault(pair.query_id, set()).update((pair.positive_id, *pair.candidates))
    return {query_id: sorted(doc_ids) for query_id, doc_ids in wanted.items()}


def training_teacher(collection: Collection, pairs: list[TrainingPair], teacher_cfg: DictConfig,
                     workspace: ScoringWorkspace) -> tuple[Scores | None, str]:
    """The ensemble of data.teacher's score files and scorers over the training pairs, and its name for errors."""
    members, names = [], []
    for file in teacher_cfg.files:
        scores = load_score_file(file, teacher_cfg.allow_pickle)
        check_same_dataset(scores, collection.queries, str(file))
        members.append(scores)
        names.append(str(file))
    listed = teacher_pairs(pairs) if teacher_cfg.scorers else {}
    reference = 0  # the teacher whose scale the ensemble takes: the first, or one on the student's own scale
    for scorer in TEACHER_SCORERS:
        if scorer.name in teacher_cfg.scorers:
            if scorer.own_scale:
                reference = len(members)
            scores, name = scorer.implementation(collection, listed, teacher_cfg, workspace)
            members.append(scores)
            names.append(name)
    if not members:
        return None, ""
    combined = ensemble(members, teacher_cfg.ensemble, teacher_cfg.weights, reference)
    return combined, " + ".join(names)


def training_set(collection: Collection, data: DictConfig, seed: int, scored: bool, workspace: ScoringWorkspace,
                 withheld: frozenset[str] = frozenset()) -> Dataset:
    """The training items: from a hard-negative file used as it is, or from the collection's qrels with
    negatives from BM25, random draws or a mined file (none of the `withheld` documents among them), scored by
    data.teacher when `scored` (the loss or data.sampling reads teacher scores)."""
    if data.training_file:
        if data.training_layout == "triples":
            return TriplesSet(data.training_file, data.negatives)
        return FlagEmbeddingSet(data.training_file, data.negatives, seed, data.teacher.from_training_file)
    pairs = training_pairs(collection, negative_candidates(collection, data, seed, workspace), data.negatives, withheld)
    teacher, teacher_name = training_teacher(collection, pairs, data.teacher, workspace) if scored else (None, "")
    if teacher is not None:
        pairs = teacher_scored_pairs(pairs, teacher, data.negatives, data.teacher.missing, teacher_name)
    return TrainingSet(collection, pairs, data.negatives, seed, teacher, data.sampling)
