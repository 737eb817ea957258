"""What ``model.backbone_weights`` may say, checked without torch or the file system's heavy parts:
torchvision's weights names per ResNet depth, ``synthetic``, or a state-dict file (which must exist).
Pure: config validation imports this; ``retina/modeling/backbone_weights.py`` resolves the weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

from .errors import WeightsError

# The weights names torchvision 0.29 has per ResNet depth (checked against torchvision by a test), so
# that validating a config needs no torch import.
TORCHVISION_WEIGHT_NAMES: Dict[int, Tuple[str, ...]] = {
    18: ("IMAGENET1K_V1",), 34: ("IMAGENET1K_V1",), 50: ("IMAGENET1K_V1", "IMAGENET1K_V2"),
    101: ("IMAGENET1K_V1", "IMAGENET1K_V2"),
}
SYNTHETIC = "synthetic"  # model.backbone_weights: pre-trained on synthetic data (retina/pretrain.py)


def is_weights_name(spec: str) -> bool:
    """A torchvision weights name (upper case, no path separator), not a file path."""
    return bool(spec) and spec.upper() == spec and "/" not in spec and not spec.endswith((".pth", ".pt"))


def check_weights_file(spec: str, depth: int) -> Path:
    """The state-dict file ``model.backbone_weights=spec`` names; WeightsError (one line) if missing."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.backbone_weights={spec!r}: file not found; expected a state dict (.pth) of "
                           f"torchvision's ResNet-{depth}, a torchvision weights name such as IMAGENET1K_V1, or '' "
                           "(from scratch)")
    return path
