"""The training data order: deterministic in (seed, position in the stream), resumable at any iteration."""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch


class StreamBatchSampler(torch.utils.data.Sampler):
    """Batches of (index, flip) drawn from an endless stream of epochs, starting at ``start_iteration``.

    Epoch e is a permutation seeded by (seed, e); the flip of the p-th sample of the stream is seeded
    by (seed, p). Both are independent of workers and of where a run was interrupted.

    ``groups`` (one int per image, e.g. :func:`aspect_ratio_groups`): batches hold images of one group
    only, as detectron2's aspect-ratio grouping does (with finer groups), so that a batch pads to
    little more than its images. The stream is the same; each image waits in its group's bucket until the bucket holds a
    batch, and batches come out in the order they fill. With one group (square synthetic images) this
    is exactly the ungrouped stream. Resuming replays the buckets up to ``start_iteration`` (integer
    work only: ~1 s per million images).
    """

    def __init__(self, num_images: int, batch_size: int, iterations: int, seed: int, flip_prob: float,
                 start_iteration: int = 0, groups: Optional[Sequence[int]] = None):
        self.num_images, self.batch_size = num_images, batch_size
        self.iterations, self.seed, self.flip_prob = iterations, seed, flip_prob
        self.start_iteration = start_iteration
        self.groups = None if groups is None or len(set(groups)) <= 1 else [int(g) for g in groups]

    def __len__(self) -> int:
        return self.iterations - self.start_iteration

    def _epoch(self, epoch: int) -> List[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_images, generator=g).tolist()

    def _stream(self, first: int = 0) -> Iterator[Tuple[int, int]]:
        """(stream position p, image index) from position ``first`` on, endlessly."""
        p = first
        cached_epoch, order = -1, []
        while True:
            epoch, pos = divmod(p, self.num_images)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, self._epoch(epoch)
            yield p, order[pos]
            p += 1

    def _flip(self, flips: torch.Generator, p: int) -> bool:
        flips.manual_seed(self.seed * 7_919 + p)
        return bool(torch.rand((), generator=flips) < self.flip_prob)

    def __iter__(self) -> Iterator[List[Tuple[int, bool]]]:
        flips = torch.Generator()
        if self.groups is None:
            stream = self._stream(self.start_iteration * self.batch_size)
            for _ in range(self.start_iteration, self.iterations):
                yield [(index, self._flip(flips, p)) for p, index in (next(stream) for _ in range(self.batch_size))]
            return
        buckets: Dict[int, List[Tuple[int, int]]] = {}
        done = 0
        for p, index in self._stream():
            bucket = buckets.setdefault(self.groups[index], [])
            bucket.append((p, index))
            if len(bucket) < self.batch_size:
                continue
            batch, buckets[self.groups[index]] = bucket, []
            if done >= self.start_iteration:
                yield [(i, self._flip(flips, q)) for q, i in batch]
            done += 1
            if done >= self.iterations:
                return


ASPECT_BINS_PER_OCTAVE = 4  # groups of width/height within a quarter octave (x1.19) of each other


def aspect_ratio_groups(heights: Sequence[int], widths: Sequence[int]) -> List[int]:
    """One group per quarter octave of width / height (floor(4 log2(w / h))): finer than detectron2's
    two (landscape / portrait), because COCO's landscape images alone mix 4:3 and 3:2 (800 and 900 px
    wide at 600 px), which padded to one size waste ~15% of a batch; quarter octaves waste ~4%
    (benchmarks/scale.py padding_share). Images whose size the annotation file does not give (0)
    form one group."""
    return [math.floor(ASPECT_BINS_PER_OCTAVE * math.log2(w / h)) if w and h else 10**6 for h, w in zip(heights, widths)]
