"""The training DataLoader: the same batches with or without worker processes, epoch after epoch
(persistent workers included), tokenised in the workers."""

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import get_worker_info

from splade_peft.data.collection import Collection
from splade_peft.data.pairs import TrainingCollator, TrainingPair, TrainingSet
from splade_peft.training import dataset as dataset_module
from tests.helpers import WORDS, word_tokenizer

EPOCHS = 2


def tiny_set(offset: int) -> TrainingSet:
    corpus = {f"d{i}": " ".join(WORDS[(i + offset) % len(WORDS):][:4]) for i in range(12)}
    queries = {f"q{i}": f"{WORDS[i]} {WORDS[-i]}" for i in range(8)}
    collection = Collection("tiny", "train", corpus, queries, {q: {f"d{i}": 1} for i, q in enumerate(queries)}, "fp")
    pairs = [TrainingPair(q, f"d{i}", tuple(f"d{j}" for j in range(12) if j != i)) for i, q in enumerate(queries)]
    return TrainingSet(collection, pairs, negatives=3, seed=7)


def loader_cfg(workers: int, persistent: bool = False, mixture: bool = False):
    return OmegaConf.create({
        "seed": 0, "model": {"query_max_length": 8, "doc_max_length": 16},
        "data": {"batch_size": 3, "num_workers": workers, "pin_memory": "auto", "prefetch_factor": 2,
                 "persistent_workers": persistent,
                 "mixture": {"sampling": "round_robin", "datasets": {"other": {"split": "train"}} if mixture else {}}},
    })


def epochs_of_batches(cfg) -> list[list[dict]]:
    loader, _ = dataset_module.training_loader(tiny_set(0), word_tokenizer(), cfg)
    epochs = []
    for epoch in range(EPOCHS):
        loader.batch_sampler.set_epoch(epoch) if cfg.data.mixture.datasets else loader.sampler.set_epoch(epoch)
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
def test_two_workers_give_the_batches_of_none(monkeypatch, mixture, persistent):
    monkeypatch.setattr(dataset_module, "load_data", lambda spec, split, cfg: None)
    monkeypatch.setattr(dataset_module, "training_set", lambda collection, cfg: tiny_set(5))
    without = epochs_of_batches(loader_cfg(0, mixture=mixture))
    assert not torch.equal(without[0][0]["documents"]["input_ids"], without[1][0]["documents"]["input_ids"])
    assert_same_batches(without, epochs_of_batches(loader_cfg(2, persistent, mixture)))


class WhereCollated(TrainingCollator):
    def __call__(self, items):
        return {**super().__call__(items), "in_worker": get_worker_info() is not None}


def test_items_are_tokenised_in_the_workers(monkeypatch):
    monkeypatch.setattr(dataset_module, "TrainingCollator", WhereCollated)
    loader, _ = dataset_module.training_loader(tiny_set(0), word_tokenizer(), loader_cfg(2))
    assert all(batch["in_worker"] for batch in loader)
    loader, _ = dataset_module.training_loader(tiny_set(0), word_tokenizer(), loader_cfg(0))
    assert not any(batch["in_worker"] for batch in loader)
