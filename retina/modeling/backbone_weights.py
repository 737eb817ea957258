"""Where a backbone's initial weights come from: nothing (from scratch), torchvision's ImageNet weights,
or a state-dict file.

``model.backbone_weights``:

* ``""``: random initialization (torchvision's ResNet ``weights=None``), trained from scratch;
* a torchvision weights name of the ResNet of ``model.depth`` (``IMAGENET1K_V1``, ``IMAGENET1K_V2``
  where torchvision has it): loaded through torchvision's weights API, i.e. from torch hub's cache
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), downloaded there
  on first use by a machine with internet;
* a path to a ``.pth`` file holding the state dict of torchvision's ResNet of that depth (its
  ``fc`` layer may be there or not: the detector does not use it);
* ``synthetic``: the ResNet retina/pretrain.py trains once on synthetic data (the ``pretrain.*``
  settings), from the user cache folder, trained there first if missing.

:func:`resolve` finds the file (downloading it where allowed) and hashes it; a weights name that is
neither cached nor downloadable, a missing file, or a file that is not such a state dict is a
one-line :class:`WeightsError` that names the weights, the cache folder and how to pass a file.
``RETINA_OFFLINE=1`` forbids downloads (the tests set it: nothing in them may download).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple

from ..errors import ConfigError, WeightsError  # noqa: F401 - WeightsError is raised from here
from ..weight_names import SYNTHETIC, TORCHVISION_WEIGHT_NAMES, check_weights_file, is_weights_name  # noqa: F401

if TYPE_CHECKING:
    import torch

OFFLINE_ENV = "RETINA_OFFLINE"


@dataclass(frozen=True)
class ResolvedWeights:
    spec: str  # model.backbone_weights as configured
    kind: str  # "torchvision" (a weights name) or "file"
    path: str  # the file read
    sha256: str  # of that file

    def describe(self) -> str:
        what = {"torchvision": f"torchvision {self.spec}", "synthetic": f"synthetic pre-training {Path(self.path).name}"
                }.get(self.kind, self.path)
        return f"{what} (sha256 {self.sha256[:12]})"


def weights_enum(depth: int):
    """torchvision's weights enum of ResNet-``depth`` (e.g. ``ResNet50_Weights``)."""
    import torchvision

    return getattr(torchvision.models, f"ResNet{depth}_Weights")


def hub_cache_dir() -> Path:
    """Where torchvision's weights API keeps downloaded weights (torch hub's ``checkpoints`` folder)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(spec: str, depth: int) -> Path:
    """The file torchvision's weights API reads for weights ``spec`` of ResNet-``depth``."""
    return hub_cache_dir() / os.path.basename(_weights(spec, depth).url)


def _weights(spec: str, depth: int):
    enum = weights_enum(depth)
    try:
        return enum[spec]
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise WeightsError(f"model.backbone_weights={spec!r} is not a weights name of torchvision's ResNet-{depth}; "
                           f"expected one of {names}, a path to a state dict (.pth), or '' (from scratch)") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_RESOLVED: Dict[tuple, ResolvedWeights] = {}  # per process: a file is hashed once


def resolve(spec: str, depth: int, allow_download: Optional[bool] = None, pretrain=None) -> Optional[ResolvedWeights]:
    """The weights file of ``model.backbone_weights=spec`` (None for ``""``), downloaded into torch hub's
    cache if it is a torchvision name not cached yet and downloads are allowed (default: unless
    ``RETINA_OFFLINE=1``), or pre-trained now if it is ``synthetic`` and not cached (``pretrain``: the
    config's ``pretrain`` section). Raises WeightsError (one line) when it cannot be had."""
    if not spec:
        return None
    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV, "") != "1"
    if spec == SYNTHETIC:
        if pretrain is None:
            raise WeightsError("model.backbone_weights=synthetic needs the config's pretrain section")
        from ..pretrain import ensure_pretrained

        path = ensure_pretrained(depth, pretrain)
        kind = "synthetic"
    elif is_weights_name(spec):
        weights = _weights(spec, depth)
        path = cached_file(spec, depth)
        if not path.is_file():
            how = (f"download them on a machine with internet (python -c \"import torchvision; "
                   f"torchvision.models.{weights_enum(depth).__name__}.{spec}.get_state_dict()\") and copy "
                   f"{path.name} into {path.parent}, or pass a state dict file: model.backbone_weights=/path/to/"
                   f"resnet{depth}.pth")
            if not allow_download:
                raise WeightsError(f"model.backbone_weights={spec}: the ResNet-{depth} weights are not in torch hub's "
                                   f"cache {path.parent} and downloads are off ({OFFLINE_ENV}=1); {how}")
            try:
                weights.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # noqa: BLE001 - no network, a proxy, a bad hash: all one line
                reason = " ".join(str(e).split())[:160]
                raise WeightsError(f"model.backbone_weights={spec}: the ResNet-{depth} weights are not in torch hub's "
                                   f"cache {path.parent} and cannot be downloaded ({reason}); {how}") from None
        kind = "torchvision"
    else:
        path = check_weights_file(spec, depth)
        kind = "file"
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _RESOLVED:
        _RESOLVED[memo] = ResolvedWeights(spec=spec, kind=kind, path=str(path), sha256=_sha256(path))
    resolved = _RESOLVED[memo]
    return ResolvedWeights(spec=spec, kind=kind, path=resolved.path, sha256=resolved.sha256)


def describe_spec(spec: str, depth: int) -> str:
    """``model.backbone_weights`` in words, without downloading anything: what a run will start from."""
    if not spec:
        return "random initialization (from scratch)"
    if spec == SYNTHETIC:
        return "pre-trained on synthetic data (retina/pretrain.py; trained once before the first trial, then cached)"
    if is_weights_name(spec):
        path = cached_file(spec, depth)
        where = f"cached at {path}" if path.is_file() else (f"not cached yet: downloaded into {path.parent} when the "
                                                             "sweep starts (needs internet)")
        return f"torchvision's ImageNet weights {spec} ({where})"
    path = Path(spec).expanduser()
    return f"weights file {path}" + (f" ({path.stat().st_size / 2**20:.0f} MiB)" if path.is_file() else " (missing)")


def load_state_dict(resolved: ResolvedWeights) -> Dict[str, "torch.Tensor"]:
    """The state dict in a resolved weights file (weights only: no code is unpickled)."""
    import torch

    try:
        state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - not a torch file, truncated, pickled code
        raise WeightsError(f"model.backbone_weights={resolved.spec!r}: {resolved.path} cannot be read as a state dict "
                           f"({' '.join(str(e).split())[:120]}); expected a file written by "
                           "torch.save(resnet.state_dict(), path)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"model.backbone_weights={resolved.spec!r}: {resolved.path} does not hold a state dict of "
                           "tensors; expected torch.save(resnet.state_dict(), path)")
    return state
