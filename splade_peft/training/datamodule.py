"""The data of a fit as a LightningDataModule: the training set (the collection's pairs with their negatives
and teacher scores, and the sets of data.mixture.datasets), the DataLoader that batches it, and the split
the job chooses on (the dev split carved from the training queries, or a split by name), validated during
training where the job validates.

The batches are a function of the seed alone: the same with any number of DataLoader workers (every index
carries its epoch), and a resumed run continues the interrupted order (EpochShuffle keeps its position).
"""

from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler

from splade_peft.data.collection import Collection
from splade_peft.data.dev_split import DEV_SPLIT
from splade_peft.data.mixture import Mixture, SingleDatasetBatches
from splade_peft.data.pairs import TrainingCollator
from splade_peft.data.sources import SLICE_SEED, load_data
from splade_peft.data.subsample import subsample
from splade_peft.training.dataset import ScoringWorkspace, training_set
from splade_peft.training.resume import EpochShuffle
from splade_peft.training.validation import RetrievalValidation, ValidationSplit


class TrainingData(L.LightningDataModule):
    """The training set of `collection` as the `data` section describes it, batched for `tokenizer`.

    `loss_reads_teacher`: the loss needs teacher scores, so data.teacher scores the pairs (data.sampling
    =teacher_rank needs them too). `selection_split` names the split the job chooses on; `dev` is the split
    carved from the training queries (`collection` holds the rest), which selection_split DEV_SPLIT reads.
    Nothing is built before `setup`: a job that trains nothing never pays for it.
    """

    validate_every_n_steps = 0  # no validation during training (ValidatedTrainingData validates)

    def __init__(self, collection: Collection | None, data: DictConfig, tokenizer, query_max_length: int,
                 doc_max_length: int, *, seed: int, workspace: ScoringWorkspace, loss_reads_teacher: bool,
                 selection_split: ValidationSplit | None = None, dev: Collection | None = None):
        super().__init__()
        self.collection, self.data, self.tokenizer = collection, data, tokenizer
        self.max_lengths = (query_max_length, doc_max_length)
        self.seed, self.workspace, self.loss_reads_teacher = seed, workspace, loss_reads_teacher
        self.selection_split, self.dev = selection_split, dev
        self.dataset: Dataset | None = None
        self.members: list[Dataset] = []  # the training sets batches come from: the dataset, then the mixture's
        self.sampler: EpochShuffle | None = None  # None for a mixture, whose order is a function of seed and epoch
        self.loader: DataLoader | None = None
        self.selection: RetrievalValidation | None = None  # what the trained model's dev figure is measured on
        self.validation: RetrievalValidation | None = None  # the same, validated during training

    @property
    def batch_size(self) -> int:
        return self.data.batch_size

    def setup(self, stage: str) -> None:
        # fit sets the data up before it builds the Trainer (ResumeState must hold the sampler, and mining
        # negatives is not training time); the Trainer's own call then finds it built.
        if self.loader is None:
            self.build()

    def build(self) -> None:
        withheld = dev_relevant(self.dev) if self.data.dev.clean_pools else frozenset()
        self.dataset = self.items_of(self.collection, withheld)
        collate = TrainingCollator(self.tokenizer, *self.max_lengths)
        self.members = [self.dataset] + [self.items_of(load_data(spec, spec.split, self.workspace.cache_dir))
                                         for spec in self.data.mixture.datasets.values()]
        if self.data.mixture.datasets:
            self.loader = mixture_loader(self.members, collate, self.data, self.seed)
        else:
            self.loader, self.sampler = training_loader(self.dataset, collate, self.data, self.seed)
        collection = self.selection_collection()
        if collection is not None:
            split = self.selection_split
            self.selection = RetrievalValidation(collection, self.tokenizer, *self.max_lengths, split.quantization,
                                                 split.k, split.tokens_per_batch, split.max_batch_size)

    def selection_collection(self) -> Collection | None:
        """The chosen-on split, sliced as the selection split says: the carved dev split (None where none was
        carved), or the training dataset's split of that name."""
        split = self.selection_split
        if split is None:
            return None
        if split.split == DEV_SPLIT:
            return None if self.dev is None else subsample(self.dev, split.max_queries, split.max_documents, SLICE_SEED)
        spec = OmegaConf.merge(self.data, {"max_queries": split.max_queries, "max_documents": split.max_documents})
        return load_data(spec, split.split, self.workspace.cache_dir)

    def items_of(self, collection: Collection, withheld: frozenset[str] = frozenset()) -> Dataset:
        scored = self.loss_reads_teacher or self.data.sampling == "teacher_rank"
        return training_set(collection, self.data, self.seed, scored, self.workspace, withheld)

    def examples(self) -> Iterator[tuple[str, Iterable[str]]]:
        """(positive text, negative pool texts) of every training example of every member (data/exposure.py)."""
        return chain.from_iterable(member.examples() for member in self.members)

    def train_dataloader(self) -> DataLoader:
        return self.loader


class ValidatedTrainingData(TrainingData):
    """TrainingData validated on its selection split during training; a separate class because Lightning warns
    on every job whose data defines val_dataloader while its module has no validation_step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.validation_loader: DataLoader | None = None

    @property
    def validate_every_n_steps(self) -> int:
        return self.selection_split.every_n_steps

    def build(self) -> None:
        super().build()
        self.validation = self.selection
        self.validation_loader = self.validation.dataloader()  # tokenised now, before the fit's clock starts

    def val_dataloader(self) -> DataLoader:
        return self.validation_loader


def dev_relevant(dev: Collection | None) -> frozenset[str]:
    """The documents judged relevant (grade > 0, as a training positive is) to a carved dev split's queries."""
    if dev is None:
        return frozenset()
    return frozenset(doc_id for judged in dev.qrels.values() for doc_id, grade in judged.items() if grade > 0)


def training_data(collection: Collection | None, data: DictConfig, tokenizer, query_max_length: int,
                  doc_max_length: int, *, seed: int, cache_dir: str | Path, search_threads: int, teacher_device: DictConfig,
                  loss_reads_teacher: bool, validation: ValidationSplit | None,
                  dev: Collection | None = None) -> TrainingData:
    """The job's TrainingData, choosing on the `validation` split (validated during training where its
    every_n_steps is not 0; `dev`: the split carved from the training queries); BM25 runs and teacher scores
    are kept under `cache_dir`, a teacher checkpoint scores on the device of `teacher_device` (the trainer section)."""
    arguments = dict(seed=seed, workspace=ScoringWorkspace(cache_dir, search_threads, teacher_device),
                     loss_reads_teacher=loss_reads_teacher, selection_split=validation, dev=dev)
    validated = validation is not None and validation.every_n_steps
    kind = ValidatedTrainingData if validated else TrainingData
    return kind(collection, data, tokenizer, query_max_length, doc_max_length, **arguments)


def training_loader(dataset: Dataset, collate: TrainingCollator, data: DictConfig, seed: int) -> tuple[DataLoader, EpochShuffle]:
    """Batches of `dataset`, and the sampler whose position a checkpoint must keep. With data.num_workers > 0
    the items are drawn and tokenised (the collator) in the worker processes."""
    sampler = EpochShuffle(dataset, seed)
    loader = DataLoader(
        EpochItems(dataset), batch_size=data.batch_size, sampler=EpochTagged(sampler),
        drop_last=len(dataset) >= data.batch_size, generator=torch.Generator().manual_seed(seed),
        collate_fn=collate, **worker_options(data),
    )
    return loader, sampler


def mixture_loader(members: list[Dataset], collate: TrainingCollator, data: DictConfig, seed: int) -> DataLoader:
    """The batches of several training sets, each batch from one of them (data.mixture.sampling)."""
    batches = SingleDatasetBatches([len(m) for m in members], data.batch_size, data.mixture.sampling, seed)
    return DataLoader(EpochItems(Mixture(members)), batch_sampler=EpochTagged(batches), collate_fn=collate,
                      **worker_options(data))


def worker_options(data: DictConfig) -> dict:
    """DataLoader's worker and memory settings from data.*; the worker-only ones only when there are workers
    (DataLoader refuses prefetch_factor and persistent_workers without them)."""
    pin_memory = torch.cuda.is_available() if data.pin_memory == "auto" else data.pin_memory
    options = {"num_workers": data.num_workers, "pin_memory": pin_memory}
    if data.num_workers > 0:
        options.update(prefetch_factor=data.prefetch_factor, persistent_workers=data.persistent_workers)
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
