"""CPU speed paths (``model.fast_cpu_convs``): the same model, computed faster on CPUs without AVX-512.

oneDNN's direct convolution is the whole cost of a cpu-profile training step, and on AVX2 CPUs it has
no Winograd kernels. This package plugs in, behind one switch (:func:`use_fast_cpu_convs`):

* the subnets over all levels by Winograd F(4x4, 3x3) (``heads.py``, ``winograd.py``, with C transforms
  built on first use, ``kernels.py``), through the model's one hook, ``RetinaNet.heads_hook``;
* the FPN's P3 output conv by Winograd (``winograd.WinogradConv2d``, the same parameters);
* the weight gradients of 3x3 convs on maps of <= 16 positions as one matrix product (``fast_conv.py``).

Each path equals the direct convolution up to float rounding (tests/test_speed_paths.py) and steps
aside off the CPU and under CPU autocast (:func:`fast_conv.applies`), so nothing changes on CUDA.
"""
from __future__ import annotations

from torch import nn

from .fast_conv import FastConv2d, applies, use_fast_convs
from .heads import heads_winograd
from .winograd import WinogradConv2d

__all__ = ["use_fast_cpu_convs", "fast_cpu_convs_on", "applies"]


def use_fast_cpu_convs(model: nn.Module, on: bool) -> None:
    """Turn the CPU speed paths of a RetinaNet on or off (parameters and state_dict keys untouched)."""
    use_fast_convs(model.backbone, on)
    use_fast_convs(model.fpn, on)
    p3 = model.fpn.output[0]
    if on:
        p3.__class__ = WinogradConv2d  # at the cpu profile's sizes the FPN's largest 3x3 conv, where Winograd pays
    elif type(p3) is WinogradConv2d:
        p3.__class__ = nn.Conv2d
    model.heads_hook = heads_winograd if on else None


def fast_cpu_convs_on(model: nn.Module) -> bool:
    return model.heads_hook is heads_winograd


assert issubclass(WinogradConv2d, FastConv2d)
