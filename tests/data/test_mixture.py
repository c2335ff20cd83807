"""Multi-dataset training: every batch from one dataset; round-robin turns and proportional draws."""

import pytest

from splade_peft.data.mixture import Mixture, SingleDatasetBatches
from splade_peft.errors import ConfigError

SIZES = [8, 4, 12]  # member datasets of 8, 4 and 12 items: indices 0-7, 8-11, 12-23


def member_of(index: int) -> int:
    return 0 if index < 8 else 1 if index < 12 else 2


def test_round_robin_takes_turns_and_skips_exhausted_datasets():
    batches = list(SingleDatasetBatches(SIZES, batch_size=4, sampling="round_robin", seed=0))
    members = [{member_of(i) for i in batch} for batch in batches]
    assert all(len(m) == 1 for m in members)  # one dataset per batch
    assert [m.pop() for m in members] == [0, 1, 2, 0, 2, 2]
    assert sorted(i for batch in batches for i in batch) == list(range(24))  # every item once per epoch


def test_proportional_sampling_follows_dataset_sizes_and_the_seed():
    sampler = SingleDatasetBatches([400, 40], batch_size=4, sampling="proportional", seed=1)
    assert len(list(sampler)) == len(sampler) == 110
    sampler.set_epoch(1)
    assert list(sampler) != list(SingleDatasetBatches([400, 40], 4, "proportional", seed=1))
    # the small dataset's 10 batches spread through the epoch instead of coming in one run
    positions = [i for i, batch in enumerate(SingleDatasetBatches([400, 40], 4, "proportional", seed=1)) if batch[0] >= 400]
    assert len(positions) == 10 and positions[-1] - positions[0] > 50


def test_drop_last_keeps_batches_full_and_len_agrees():
    sampler = SingleDatasetBatches([5, 3], batch_size=2, sampling="round_robin", seed=0)
    assert all(len(batch) == 2 for batch in sampler) and len(list(sampler)) == len(sampler) == 3


def test_unknown_sampling_names_the_key():
    from splade_peft.config import validate
    from tests.helpers import composed

    with pytest.raises(ConfigError, match="data.mixture.sampling"):
        validate(composed("data.mixture.sampling=random"))


def test_mixture_forwards_the_epoch_to_its_members():
    class Member(list):
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    members = [Member([1, 2]), Member([3])]
    mixture = Mixture(members)
    mixture.set_epoch(3)
    assert [m.epoch for m in members] == [3, 3] and [mixture[i] for i in range(3)] == [1, 2, 3]
