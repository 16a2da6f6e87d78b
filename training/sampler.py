"""A distributed, shuffling sampler that can start mid-epoch (exact resume)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Each rank's share of a seeded permutation (``seed + epoch``), padded to equal length like
    ``DistributedSampler``; ``set_start(k)`` skips the first k indices of the epoch."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world = rank, world_size
        self.pad = pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            total = -(-self.size // self.world) * self.world
            order += order[: total - len(order)]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return len(self._indices()) - self.start
