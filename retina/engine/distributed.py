"""Data-parallel training over ``torch.distributed``: the trainer's side of it, without Ray.

Whoever starts the processes initializes the process group (Ray Train's ``TorchTrainer`` in
``orchestrator/runner.py``: NCCL on GPUs, gloo on CPUs; ``torch.multiprocessing`` in
``tests/test_distributed.py``); :func:`retina.train.fit` then finds it initialized and trains
data-parallel. What that means, step by step, so that N processes compute the gradient one process
would compute on the same batch of ``train.batch_size`` images (which stays the *total* batch):

* **data**: every process draws the same global batch from ``StreamBatchSampler`` (same seed, same
  order, same flips) and keeps a contiguous share of it (:class:`ShardedBatchSampler`: process r
  of N takes items ``[r*B//N, (r+1)*B//N)``; shares may differ by one image);
* **padding**: each process pads its images to the largest padded size over all processes
  (:func:`pad_like_global_batch`), i.e. to the size collate gives the whole batch, so the anchors
  and the padded area's negatives are those of the whole batch;
* **loss normalizer**: the foreground count (and its moving average, ``loss.normalizer_momentum``)
  is summed over processes (:func:`sum_over_processes`), so every process divides by the whole
  batch's count;
* **gradient**: each process's loss is its images' sum divided by that global count; DDP averages
  gradients over the N processes, so the loss is multiplied by N before ``backward`` (the average
  of N partial sums x N = their sum = the single-process gradient). Clipping, weight decay and the
  optimizer then run on identical gradients in every process, which keeps the weights identical.
* **BatchNorm** (the ResNet backbone's, in training mode, ``model.backbone_norm=bn``): statistics are
  per process. With ``model.backbone_norm=sync_bn`` on CUDA the backbone's BatchNorm layers become
  ``SyncBatchNorm`` (statistics of the whole batch, as one process); torch's SyncBatchNorm does not run
  on the CPU, so with gloo on CPUs each process normalizes with the statistics of its own share, and
  the gradient differs from the single process's by that (and only that). Frozen BatchNorm
  (``frozen_bn``, the paper's) and GroupNorm (``group``, and the heads' ``model.head_norm=group``) do
  not depend on the batch at all.

Equal means equal up to float rounding: sums over images are taken in a different order
(per process, then across processes). Metrics (loss, foreground count, images) are summed over
processes so that every process reports the whole batch's figures.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("retina.distributed")


@dataclass(frozen=True)
class Context:
    """This process's place in the process group (world_size 1: not distributed)."""
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and evaluates."""
        return self.rank == 0


def context() -> Context:
    """The process group torch.distributed was initialized with, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()


def shard_bounds(batch_size: int, rank: int, world_size: int) -> Tuple[int, int]:
    """[lo, hi) of the global batch that process ``rank`` of ``world_size`` takes (contiguous)."""
    return rank * batch_size // world_size, (rank + 1) * batch_size // world_size


class ShardedBatchSampler(torch.utils.data.Sampler):
    """This process's contiguous share of each batch of ``batch_sampler`` (every process iterates
    the same batch sampler, so the shares of one iteration make up exactly its global batch)."""

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[List]:
        for batch in self.batch_sampler:
            lo, hi = shard_bounds(len(batch), self.rank, self.world_size)
            yield batch[lo:hi]


def _all_reduce(values: Sequence[float], device: torch.device, op) -> List[float]:
    # float64 so that counts and sums stay exact enough; NCCL needs the tensor on the GPU
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def sum_over_processes(values: Sequence[float], device: torch.device) -> List[float]:
    """Element-wise sum of ``values`` over all processes (every process gets the sums)."""
    return _all_reduce(values, device, dist.ReduceOp.SUM)


def max_over_processes(values: Sequence[float], device: torch.device) -> List[float]:
    return _all_reduce(values, device, dist.ReduceOp.MAX)


def sum_tensor_over_processes(t: torch.Tensor) -> torch.Tensor:
    """An all-reduce (sum) of a device tensor; the result stays on the device (no host read)."""
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def max_tensor_over_processes(t: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def pad_like_global_batch(batch: Dict, device: torch.device) -> Dict:
    """Zero-pad ``batch["images"]`` (N, 3, H, W) to the largest padded size over all processes.

    collate pads a batch to its largest image rounded up to ``size_divisibility``; the largest of the
    processes' padded sizes is the size collate gives the whole batch (rounding up commutes with
    the maximum). Zero is the value collate pads with (after normalization)."""
    images = batch["images"]
    h, w = images.shape[-2:]
    gh, gw = (int(v) for v in max_over_processes([h, w], device))
    if (gh, gw) != (h, w):
        batch = dict(batch, images=F.pad(images, (0, gw - w, 0, gh - h)))
    return batch


def wrap_model(model: torch.nn.Module, device: torch.device, ctx: Context,
               sync_batch_norm: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around ``model``; with ``sync_batch_norm`` (``model.backbone_norm=sync_bn``)
    on CUDA, after converting its BatchNorm layers to SyncBatchNorm (which keeps the parameter objects
    and the state_dict keys). torch has no SyncBatchNorm on CPUs: there each process keeps its own
    statistics (a warning says so). ``ctx`` not enabled: ``model``."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_batch_norm and device.type != "cuda":
        log.warning("model.backbone_norm=sync_bn: torch has no SyncBatchNorm on %s; each of the %d processes "
                    "normalizes with its own share's statistics", device.type, ctx.world_size)
    if device.type == "cuda":
        if sync_batch_norm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (its state_dict has no ``module.`` prefix)."""
    return getattr(model, "module", model)
