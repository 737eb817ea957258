"""The class and box subnets over all pyramid levels by Winograd: ``RetinaNet.heads_hook`` on CPU."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.heads import Subnet
from . import kernels, winograd
from .fast_conv import applies


def _norm_relu(y: torch.Tensor, norm: nn.GroupNorm | None) -> torch.Tensor:
    """[GroupNorm] and ReLU of a channels-last (N, H, W, C) tensor; returns (N, H, W, C) contiguous."""
    if norm is not None:
        y = F.group_norm(y.permute(0, 3, 1, 2), norm.num_groups, norm.weight, norm.bias, norm.eps).permute(0, 2, 3, 1)
    return F.relu(y, inplace=True).contiguous()


def heads_winograd(cls_subnet: Subnet, box_subnet: Subnet,
                   features: Sequence[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Both subnets over all levels, as ``cls_subnet(features), box_subnet(features)`` compute them, with
    the 3x3 convs by Winograd (retina/cpu/winograd.py): one matrix product per conv for all levels, and
    the two subnets' first convs (same input) as one. Channels-last throughout. The predictors (few
    output channels) too where the C transforms are built; with the PyTorch transforms they would cost
    more than they save, and the predictors stay direct. None (the caller runs the subnets as modules)
    where the fast paths do not apply: off the CPU, under CPU autocast."""
    if not applies(features[0]):
        return None
    xs = [f.permute(0, 2, 3, 1) for f in features]  # (N, H, W, C): free if features are channels_last
    subnets = (cls_subnet, box_subnet)
    stages = [s.layers() + [(s.predictor, None)] for s in subnets]
    c_kernels = xs[0].dtype == torch.float32 and kernels.load() is not None
    states = [xs, xs]
    for i in range(len(stages[0])):
        convs = [stage[i][0] for stage in stages]
        last = i == len(stages[0]) - 1
        if last and not c_kernels:  # direct, on the channels-last view
            ys = [[c.predictor(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) for x in state]
                  for c, state in zip(subnets, states)]
        elif states[0] is states[1]:  # the same input: one product for both subnets
            outs = winograd.conv3x3(states[0], [c.weight for c in convs], [c.bias for c in convs])
            ys = [[o[j] for o in outs] for j in range(2)]
        else:
            ys = [[o[0] for o in winograd.conv3x3(states[j], [convs[j].weight], [convs[j].bias])]
                  for j in range(2)]
        states = ys if last else [[_norm_relu(y, stages[j][i][1]) for y in ys[j]] for j in range(2)]
    n = features[0].shape[0]
    # (N, H, W, A*K) is already (N, H*W*A, K) in memory
    return tuple(torch.cat([y.reshape(n, -1, s.out_per_anchor) for y in ys], dim=1)
                 for ys, s in zip(states, subnets))
