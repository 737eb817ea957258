"""The ResNet backbone (torchvision's) -> C3, C4, C5, with the paper's initialization and freezing.

The paper fine-tuned ImageNet ResNets with frozen BatchNorm, as Detectron (affine-frozen BN,
``FREEZE_AT: 2``), detectron2 (``RESNETS.NORM: FrozenBN``, ``FREEZE_AT: 2``), mmdetection and
torchvision all do. Here that is three choices (``model.*``):

* ``backbone_weights``: where the initial weights come from (retina/backbone_weights.py);
* ``backbone_norm``: ``bn`` (trainable BatchNorm, per process), ``frozen_bn`` (torchvision's
  FrozenBatchNorm2d: the loaded statistics and affine parameters, fixed), ``sync_bn`` (BatchNorm
  whose statistics are synchronized across the processes of a data-parallel CUDA trial; in one
  process the same as ``bn``), ``group`` (GroupNorm with 32 groups, for training from scratch);
* ``freeze_at``: detectron2's meaning: stages 1 (the stem) .. ``freeze_at`` get no gradient and
  keep their weights, and their BatchNorm layers become frozen; 0 freezes nothing, 2 = stem and res2
  (detectron2's default), 5 = the whole backbone.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..config import BACKBONE_NORMS, NUM_STAGES  # noqa: F401 - NUM_STAGES: stem (1), res2 .. res5 (2 .. 5)

RESNET_C_CHANNELS = {18: (128, 256, 512), 34: (128, 256, 512), 50: (512, 1024, 2048), 101: (512, 1024, 2048)}
GROUP_NORM_GROUPS = 32


def frozen_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d (or SyncBatchNorm) replaced by a FrozenBatchNorm2d holding its
    statistics and affine parameters (in place where nested; the converted module is returned)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = frozen_batch_norm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


class ResNetBackbone(nn.Module):
    """torchvision ResNet-``depth`` -> (C3, C4, C5) at strides 8, 16, 32.

    Args:
        depth: 18, 34, 50 or 101.
        norm: one of BACKBONE_NORMS (see the module docstring).
        freeze_at: 0 .. 5; stages 1 .. freeze_at are frozen.
        state_dict: torchvision ResNet weights to start from (its ``fc.*`` entries may be absent);
            None: random (torchvision's initialization).
    """

    def __init__(self, depth: int, norm: str = "bn", freeze_at: int = 0,
                 state_dict: Optional[Dict[str, torch.Tensor]] = None):
        super().__init__()
        if norm not in BACKBONE_NORMS:
            raise ValueError(f"backbone norm {norm!r}; expected one of {', '.join(BACKBONE_NORMS)}")
        if not 0 <= freeze_at <= NUM_STAGES:
            raise ValueError(f"freeze_at={freeze_at}; expected 0 .. {NUM_STAGES}")
        norm_layer = (lambda channels: nn.GroupNorm(GROUP_NORM_GROUPS, channels)) if norm == "group" else None
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm_layer)
        if state_dict is not None:
            load_resnet_state_dict(net, state_dict, depth, norm)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = RESNET_C_CHANNELS[depth]
        self.norm, self.freeze_at = norm, freeze_at
        if norm == "frozen_bn":
            frozen_batch_norm(self)
        for stage in self.stages()[:freeze_at]:
            frozen_batch_norm(stage)
            for p in stage.parameters():
                p.requires_grad_(False)

    def stages(self) -> List[nn.Module]:
        """The five stages in order: stem, res2 (layer1), res3, res4, res5."""
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


def load_resnet_state_dict(net: nn.Module, state_dict: Dict[str, torch.Tensor], depth: int, norm: str) -> None:
    """Load torchvision ResNet weights into ``net`` (a torchvision ResNet), strictly: every backbone
    tensor must be there with its shape (the classifier ``fc.*`` may be missing). A mismatch is a
    ValueError naming the first wrong keys."""
    from .backbone_weights import WeightsError

    wanted = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    given = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    if norm == "group":
        stats = [k for k in given if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        if stats:
            raise WeightsError(f"the backbone weights hold BatchNorm statistics ({stats[0]}, ...); "
                               "model.backbone_norm=group expects a GroupNorm ResNet's state dict: use bn or "
                               "frozen_bn with these weights")
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    wrong = sorted(k for k in set(wanted) & set(given) if tuple(wanted[k].shape) != tuple(given[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise WeightsError(f"the backbone weights are not a state dict of torchvision's ResNet-{depth} "
                           f"({'; '.join(parts)})")
    net.load_state_dict({**given, **{k: v for k, v in net.state_dict().items() if k.startswith("fc.")}})
