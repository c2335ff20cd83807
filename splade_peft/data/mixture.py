"""Several training sets in one run: every batch comes from one dataset, and the datasets take turns
(round_robin) or are drawn in proportion to their number of batches (proportional)."""

import random
from collections.abc import Iterator

from torch.utils.data import ConcatDataset, Sampler

from splade_peft.records import stable_seed


class Mixture(ConcatDataset):
    """The member datasets back to back; `set_epoch` reaches the members that re-draw negatives."""

    def set_epoch(self, epoch: int) -> None:
        for member in self.datasets:
            if hasattr(member, "set_epoch"):
                member.set_epoch(epoch)


class SingleDatasetBatches(Sampler[list[int]]):
    """Index batches into a Mixture, each from one member dataset, shuffled per (seed, epoch)."""

    def __init__(self, sizes: list[int], batch_size: int, sampling: str, seed: int, drop_last: bool = True):
        self.sizes, self.batch_size, self.sampling, self.seed, self.drop_last = sizes, batch_size, sampling, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def member_batches(self, rng: random.Random) -> list[list[list[int]]]:
        batches, offset = [], 0
        for size in self.sizes:
            order = [offset + i for i in rng.sample(range(size), size)]
            chunks = [order[i:i + self.batch_size] for i in range(0, size, self.batch_size)]
            batches.append([c for c in chunks if len(c) == self.batch_size or not self.drop_last])
            offset += size
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(stable_seed(self.seed, self.epoch, "mixture"))
        queues = [list(reversed(batches)) for batches in self.member_batches(rng)]
        turn = 0
        while any(queues):
            if self.sampling == "round_robin":
                while not queues[turn % len(queues)]:
                    turn += 1
                member = turn % len(queues)
                turn += 1
            else:
                member = rng.choices(range(len(queues)), weights=[len(q) for q in queues])[0]
            yield queues[member].pop()

    def __len__(self) -> int:
        full = [size // self.batch_size for size in self.sizes]
        return sum(full) if self.drop_last else sum(-(-size // self.batch_size) for size in self.sizes)
