"""A detector from a config, in two explicit steps: get the backbone's weights (which may download
torchvision's or pre-train the synthetic stand-in: :func:`resolve_backbone`), then build the network
from them (:func:`build_model`: never downloads or trains) with the CPU speed paths plugged in."""
from __future__ import annotations

from .modeling.backbone_weights import ResolvedWeights, resolve
from .modeling.retinanet import RetinaNet, from_config


def resolve_backbone(cfg) -> "ResolvedWeights | None":
    """The weights ``model.backbone_weights`` names, had now: read, downloaded where allowed, or
    pre-trained (``synthetic``, cached afterwards). WeightsError (one line) when they cannot be had."""
    return resolve(cfg.model.backbone_weights, cfg.model.depth, pretrain=cfg.pretrain)


def build_model(cfg, num_classes: int, backbone: "ResolvedWeights | None" = None) -> RetinaNet:
    """The RetinaNet of ``cfg`` from already resolved backbone weights (None: random, or a checkpoint
    loaded next), with ``model.fast_cpu_convs`` applied (retina/cpu/)."""
    from .cpu import use_fast_cpu_convs

    model = from_config(cfg, num_classes, backbone=backbone)
    use_fast_cpu_convs(model, cfg.model.fast_cpu_convs)
    return model
