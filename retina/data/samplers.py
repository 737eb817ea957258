"""The training data order: deterministic in (seed, position in the stream), resumable at any iteration."""
from __future__ import annotations

from typing import Iterator, List, Tuple

import torch


class StreamBatchSampler(torch.utils.data.Sampler):
    """Batches of (index, flip) drawn from an endless stream of epochs, starting at ``start_iteration``.

    Epoch e is a permutation seeded by (seed, e); the flip of the p-th sample of the stream is seeded
    by (seed, p). Both are independent of workers and of where a run was interrupted.
    """

    def __init__(self, num_images: int, batch_size: int, iterations: int, seed: int, flip_prob: float,
                 start_iteration: int = 0):
        self.num_images, self.batch_size = num_images, batch_size
        self.iterations, self.seed, self.flip_prob = iterations, seed, flip_prob
        self.start_iteration = start_iteration

    def __len__(self) -> int:
        return self.iterations - self.start_iteration

    def _epoch(self, epoch: int) -> List[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_images, generator=g).tolist()

    def __iter__(self) -> Iterator[List[Tuple[int, bool]]]:
        flips = torch.Generator()
        cached_epoch, order = -1, []
        for it in range(self.start_iteration, self.iterations):
            batch = []
            for p in range(it * self.batch_size, (it + 1) * self.batch_size):
                epoch, pos = divmod(p, self.num_images)
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch(epoch)
                flips.manual_seed(self.seed * 7_919 + p)
                batch.append((order[pos], bool(torch.rand((), generator=flips) < self.flip_prob)))
            yield batch
