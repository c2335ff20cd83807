"""TrainingData, the LightningDataModule of a fit: the same batches with or without worker processes, epoch
after epoch (persistent workers included), tokenised in the workers; built once; the split it chooses on (the
carved dev split, or a split by name) and a validation loader only where there is validation."""

import pytest
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import OmegaConf
from torch.utils.data import get_worker_info

from splade_peft.data.collection import Collection
from splade_peft.data.dev_split import DEV_SPLIT
from splade_peft.data.pairs import TrainingCollator, TrainingPair, TrainingSet
from splade_peft.training import datamodule as datamodule_code
from splade_peft.training.validation import ValidationSplit
from tests.helpers import WORDS, word_tokenizer

EPOCHS = 2
MIXED_IN = Collection("other", "train", {}, {}, {}, "other")


def tiny_collection(offset: int) -> Collection:
    corpus = {f"d{i}": " ".join(WORDS[(i + offset) % len(WORDS):][:4]) for i in range(12)}
    queries = {f"q{i}": f"{WORDS[i]} {WORDS[-i]}" for i in range(8)}
    return Collection("tiny", "train", corpus, queries, {q: {f"d{i}": 1} for i, q in enumerate(queries)}, "fp")


def tiny_set(collection: Collection) -> TrainingSet:
    pairs = [TrainingPair(q, f"d{i}", tuple(f"d{j}" for j in range(12) if j != i)) for i, q in enumerate(collection.queries)]
    return TrainingSet(collection, pairs, negatives=3, seed=7)


MAIN, OTHER = tiny_collection(0), tiny_collection(5)


@pytest.fixture(autouse=True)
def tiny_sets(monkeypatch):
    """The main collection's set, and OTHER's for the mixture's entry: no BM25 mining, no data files."""
    monkeypatch.setattr(datamodule_code, "load_data", lambda spec, split, cache_dir: MIXED_IN)
    monkeypatch.setattr(datamodule_code, "training_set",
                        lambda collection, *args: tiny_set(OTHER if collection is MIXED_IN else collection))


def data_section(workers: int, persistent: bool = False, mixture: bool = False):
    return OmegaConf.create({
        "batch_size": 3, "num_workers": workers, "pin_memory": "auto", "prefetch_factor": 2,
        "persistent_workers": persistent, "sampling": "uniform", "dev": {"clean_pools": True},
        "mixture": {"sampling": "round_robin", "datasets": {"other": {"split": "train"}} if mixture else {}},
    })


def training_data(data, validation: ValidationSplit | None = None, dev: Collection | None = None):
    return datamodule_code.training_data(
        MAIN, data, word_tokenizer(), 8, 16, seed=0, cache_dir="unused", search_threads=1, teacher_device=None,
        loss_reads_teacher=False, validation=validation, dev=dev,
    )


def selection_split(split: str, every_n_steps: int = 5) -> ValidationSplit:
    return ValidationSplit(every_n_steps=every_n_steps, split=split, max_queries=2, max_documents=4, k=10,
                           quantization=100, tokens_per_batch=64, max_batch_size=4)


def epochs_of_batches(data) -> list[list[dict]]:
    module = training_data(data)
    module.setup("fit")
    loader = module.train_dataloader()
    epochs = []
    for epoch in range(EPOCHS):
        loader.batch_sampler.set_epoch(epoch) if data.mixture.datasets else loader.sampler.set_epoch(epoch)
        epochs.append(list(loader))
    return epochs


def assert_same_batches(left: list[list[dict]], right: list[list[dict]]) -> None:
    assert [len(epoch) for epoch in left] == [len(epoch) for epoch in right]
    for epoch_left, epoch_right in zip(left, right):
        for a, b in zip(epoch_left, epoch_right):
            for side in ("queries", "documents"):
                assert torch.equal(a[side]["input_ids"], b[side]["input_ids"])
                assert torch.equal(a[side]["attention_mask"], b[side]["attention_mask"])


@pytest.mark.parametrize("mixture", [False, True], ids=["one dataset", "mixture"])
@pytest.mark.parametrize("persistent", [False, True], ids=["fresh workers", "persistent workers"])
def test_two_workers_give_the_batches_of_none(mixture, persistent):
    without = epochs_of_batches(data_section(0, mixture=mixture))
    assert not torch.equal(without[0][0]["documents"]["input_ids"], without[1][0]["documents"]["input_ids"])
    assert_same_batches(without, epochs_of_batches(data_section(2, persistent, mixture)))


class WhereCollated(TrainingCollator):
    def __call__(self, items):
        return {**super().__call__(items), "in_worker": get_worker_info() is not None}


@pytest.mark.parametrize("workers", [2, 0])
def test_items_are_tokenised_in_the_workers(monkeypatch, workers):
    monkeypatch.setattr(datamodule_code, "TrainingCollator", WhereCollated)
    module = training_data(data_section(workers))
    module.setup("fit")
    assert all(batch["in_worker"] == (workers > 0) for batch in module.train_dataloader())


def test_set_up_once_keeps_the_sampler_a_checkpoint_resumes():
    """fit sets the data up before the Trainer (ResumeState holds the sampler); the Trainer's setup call must
    not build a second loader whose sampler the checkpoint would not move."""
    module = training_data(data_section(0))
    module.setup("fit")
    loader, sampler = module.train_dataloader(), module.sampler
    module.setup("fit")
    assert module.train_dataloader() is loader and module.sampler is sampler is loader.sampler.sampler
    assert len(module.dataset) == len(MAIN.queries)


def test_a_mixture_has_no_sampler_to_resume():
    module = training_data(data_section(0, mixture=True))
    module.setup("fit")
    assert module.sampler is None and len(module.train_dataloader().dataset) == 2 * len(MAIN.queries)


def test_only_data_with_a_validation_split_defines_a_validation_loader(monkeypatch):
    """Lightning warns on every job whose data defines val_dataloader while its module has no validation_step."""
    plain = training_data(data_section(0))
    assert not is_overridden("val_dataloader", plain) and plain.validate_every_n_steps == 0
    plain.setup("fit")
    assert plain.validation is None and plain.selection is None

    slices = []
    monkeypatch.setattr(datamodule_code, "load_data", lambda spec, split, cache_dir: slices.append((spec, split)) or MAIN)
    validated = training_data(data_section(0), selection_split("validation"))
    assert is_overridden("val_dataloader", validated) and validated.validate_every_n_steps == 5
    validated.setup("fit")
    (spec, split_name), = slices
    assert split_name == "validation" and (spec.max_queries, spec.max_documents) == (2, 4)
    assert validated.validation is validated.selection and validated.validation.collection is MAIN
    assert validated.validation.k == 10
    batches = list(validated.val_dataloader())
    assert sum(len(batch["ids"]) for batch in batches) == len(MAIN.corpus) + len(MAIN.queries)


@pytest.mark.parametrize("every_n_steps", [5, 0], ids=["validated", "measured after training only"])
def test_the_dev_split_is_the_carved_collection_sliced_and_never_loaded_by_name(monkeypatch, every_n_steps):
    monkeypatch.setattr(datamodule_code, "load_data", lambda *args: pytest.fail("dev is carved, not loaded"))
    dev = Collection("tiny", DEV_SPLIT, OTHER.corpus, dict(list(OTHER.queries.items())[:3]),
                     {q: OTHER.qrels[q] for q in list(OTHER.queries)[:3]}, "dev-fp")
    module = training_data(data_section(0), selection_split(DEV_SPLIT, every_n_steps), dev=dev)
    assert is_overridden("val_dataloader", module) == bool(every_n_steps)
    module.setup("fit")
    chosen_on = module.selection.collection
    assert chosen_on.split == DEV_SPLIT and len(chosen_on.queries) == 2 and len(chosen_on.corpus) == 4
    assert set(chosen_on.queries) <= set(dev.queries) and (module.validation is module.selection) == bool(every_n_steps)


def test_no_carved_dev_split_leaves_nothing_to_choose_on():
    module = training_data(data_section(0), selection_split(DEV_SPLIT, 0))
    module.setup("fit")
    assert module.selection is None


def test_validation_split_of_the_eval_and_index_sections():
    eval_cfg = OmegaConf.create({"validate_every_n_steps": 0, "validation_split": "dev", "validation_max_queries": 3,
                                 "validation_max_documents": 9, "k": 100})
    index_cfg = OmegaConf.create({"quantization": 100, "tokens_per_batch": 512, "max_batch_size": 8})
    assert ValidationSplit.of(eval_cfg, index_cfg) == ValidationSplit(0, "dev", 3, 9, 100, 100, 512, 8)
    eval_cfg.validate_every_n_steps = 4
    assert ValidationSplit.of(eval_cfg, index_cfg) == ValidationSplit(4, "dev", 3, 9, 100, 100, 512, 8)
