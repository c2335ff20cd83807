"""The training data of a job: (query, positive, negatives) items from the collection's qrels or a
hard-negative file, negatives mined by BM25 or drawn at random, scored by the data.teacher ensemble,
and the DataLoader that batches them (one collection, or a mixture of several)."""

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from splade_peft.data.collection import Collection
from splade_peft.data.hard_negatives import (
    FlagEmbeddingSet, TriplesSet, flagembedding_candidates, st_hard_negative_candidates,
)
from splade_peft.data.mixture import Mixture, SingleDatasetBatches
from splade_peft.data.pairs import (
    TrainingCollator, TrainingPair, TrainingSet, bm25_candidates, random_candidates, teacher_scored_pairs, training_pairs,
)
from splade_peft.data.sources import load_data
from splade_peft.data.teachers import Scores, check_same_dataset, ensemble, load_score_file
from splade_peft.search.bm25 import cached_bm25_run
from splade_peft.training.losses import DISTILLATION_LOSSES
from splade_peft.training.resume import EpochShuffle
from splade_peft.training.teacher_scoring import cached_bm25_scores, cached_splade_scores


def negative_candidates(collection: Collection, cfg: DictConfig) -> dict:
    if cfg.data.negatives_source == "file":
        return flagembedding_candidates(cfg.data.negatives_file, collection, cfg.data.unknown_ids)[0]
    if cfg.data.negatives_source == "st_hard_negatives":
        systems = cfg.data.hard_negative_systems
        return st_hard_negative_candidates(cfg.data.negatives_file, list(systems) if systems else None,
                                           cfg.data.negatives_depth)
    if cfg.data.negatives_source == "random":
        return random_candidates(collection, cfg.data.negatives_depth, cfg.seed)
    deepest_judged = max(len(judged) for judged in collection.qrels.values())
    run, _ = cached_bm25_run(collection, cfg.paths.cache, cfg.data.negatives_depth + deepest_judged,
                             cfg.eval.search_threads)
    return bm25_candidates(collection, run, cfg.data.negatives_depth)


def teacher_pairs(pairs: list[TrainingPair]) -> dict[str, list[str]]:
    """{query id: sorted ids of its positives and candidates}: every pair a scorer must score."""
    wanted: dict[str, set] = {}
    for pair in pairs:
        wanted.setdefault(pair.query_id, set()).update((pair.positive_id, *pair.candidates))
    return {query_id: sorted(doc_ids) for query_id, doc_ids in wanted.items()}


def training_teacher(collection: Collection, pairs: list[TrainingPair], cfg: DictConfig) -> tuple[Scores | None, str]:
    """The ensemble of data.teacher's score files and scorers over the training pairs, and its name for errors."""
    teacher_cfg = cfg.data.teacher
    members, names = [], []
    for file in teacher_cfg.files:
        scores = load_score_file(file, teacher_cfg.allow_pickle)
        check_same_dataset(scores, collection.queries, str(file))
        members.append(scores)
        names.append(str(file))
    listed = teacher_pairs(pairs) if teacher_cfg.scorers else {}
    reference = 0  # the teacher whose scale the ensemble takes: the first, or the splade scorer
    if "splade" in teacher_cfg.scorers:
        reference = len(members)  # it scores on the student's own scale
        members.append(cached_splade_scores(
            teacher_cfg.checkpoint, collection.queries, collection.corpus, listed, cfg.paths.cache, cfg.trainer))
        names.append(f"splade teacher {teacher_cfg.checkpoint}")
    if "bm25" in teacher_cfg.scorers:
        members.append(cached_bm25_scores(collection, listed, cfg.paths.cache, cfg.eval.search_threads))
        names.append("bm25 teacher")
    if not members:
        return None, ""
    combined = ensemble(members, teacher_cfg.ensemble, teacher_cfg.get("weights"), reference)
    return combined, " + ".join(names)


def needs_teacher(cfg: DictConfig) -> bool:
    return any(cfg.loss.weights.get(name) for name in DISTILLATION_LOSSES) or cfg.data.sampling == "teacher_rank"


def training_set(collection: Collection, cfg: DictConfig) -> Dataset:
    """The training items: from a hard-negative file used as it is, or from the collection's qrels with
    negatives from BM25, random draws or a mined file, scored by data.teacher when one is set."""
    if cfg.data.training_file:
        if cfg.data.training_layout == "triples":
            return TriplesSet(cfg.data.training_file, cfg.data.negatives)
        return FlagEmbeddingSet(cfg.data.training_file, cfg.data.negatives, cfg.seed, cfg.data.teacher.from_training_file)
    pairs = training_pairs(collection, negative_candidates(collection, cfg), cfg.data.negatives)
    teacher, teacher_name = training_teacher(collection, pairs, cfg) if needs_teacher(cfg) else (None, "")
    if teacher is not None:
        pairs = teacher_scored_pairs(pairs, teacher, cfg.data.negatives, cfg.data.teacher.missing, teacher_name)
    return TrainingSet(collection, pairs, cfg.data.negatives, cfg.seed, teacher, cfg.data.sampling)


def training_loader(dataset: Dataset, tokenizer, cfg: DictConfig) -> tuple[DataLoader, EpochShuffle | None]:
    """Batches of `dataset` (and of data.mixture's datasets), and the sampler whose position a checkpoint
    must keep (None for a mixture, whose batch order is a function of seed and epoch alone).

    With data.num_workers > 0 the items are drawn and tokenised (the collator) in the worker processes;
    every index carries its epoch, so the batches are the same whatever the number of workers."""
    collate = TrainingCollator(tokenizer, cfg.model.query_max_length, cfg.model.doc_max_length)
    if cfg.data.mixture.datasets:
        return mixture_loader(dataset, collate, cfg), None
    sampler = EpochShuffle(dataset, cfg.seed)
    loader = DataLoader(
        EpochItems(dataset), batch_size=cfg.data.batch_size, sampler=EpochTagged(sampler),
        drop_last=len(dataset) >= cfg.data.batch_size, generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=collate, **worker_options(cfg.data),
    )
    return loader, sampler


def mixture_loader(first: Dataset, collate: TrainingCollator, cfg: DictConfig) -> DataLoader:
    """The main training set and those of data.mixture.datasets, each batch from one of them."""
    members = [first] + [training_set(load_data(spec, spec.split, cfg), cfg) for spec in cfg.data.mixture.datasets.values()]
    batches = SingleDatasetBatches([len(m) for m in members], cfg.data.batch_size, cfg.data.mixture.sampling, cfg.seed)
    return DataLoader(EpochItems(Mixture(members)), batch_sampler=EpochTagged(batches), collate_fn=collate,
                      **worker_options(cfg.data))


def worker_options(data_cfg: DictConfig) -> dict:
    """DataLoader's worker and memory settings from data.*; the worker-only ones only when there are workers
    (DataLoader refuses prefetch_factor and persistent_workers without them)."""
    pin_memory = torch.cuda.is_available() if data_cfg.pin_memory == "auto" else data_cfg.pin_memory
    options = {"num_workers": data_cfg.num_workers, "pin_memory": pin_memory}
    if data_cfg.num_workers > 0:
        options.update(prefetch_factor=data_cfg.prefetch_factor, persistent_workers=data_cfg.persistent_workers)
    return options


class EpochTagged(Sampler):
    """Yields (epoch, index), or lists of them from a batch sampler: a persistent worker keeps its copy of
    the dataset across epochs, so the epoch whose negatives an item draws must come with the index."""

    def __init__(self, sampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        for item in self.sampler:
            yield [(epoch, index) for index in item] if isinstance(item, list) else (epoch, item)


class EpochItems(Dataset):
    """`dataset[index]` as drawn in `epoch`, for the (epoch, index) keys of EpochTagged."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        self.set_epoch(epoch)
        return self.dataset[index]
