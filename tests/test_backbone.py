"""The backbone's initialization, normalization and freezing (retina/backbone.py, retina/backbone_weights.py).

Nothing here downloads: weights files are state dicts saved from torchvision's ResNet into tmp_path,
and torch hub's cache is pointed at an empty folder where a test needs it absent.
"""
from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from retina.modeling import backbone_weights
from retina.modeling.backbone import ResNetBackbone
from retina.modeling.backbone_weights import TORCHVISION_WEIGHT_NAMES, WeightsError, resolve
from retina.config import ConfigError, load_config
from retina.build import build_model, resolve_backbone

from .conftest import SCRATCH_BACKBONE


def saved_resnet(tmp_path, depth: int = 18, seed: int = 0):
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    # non-trivial BatchNorm statistics, as trained weights have
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_the_weight_names_table_is_torchvisions():
    for depth, names in TORCHVISION_WEIGHT_NAMES.items():
        assert names == tuple(w.name for w in getattr(torchvision.models, f"ResNet{depth}_Weights"))


def test_a_torchvision_resnet_state_dict_loads_into_the_backbone_to_the_bit(tmp_path):
    net, path = saved_resnet(tmp_path)
    cfg = load_config("cpu", overrides=[f"model.backbone_weights={path}", "model.backbone_norm=bn", "model.freeze_at=0",
                                        "model.fast_cpu_convs=false"])
    model = build_model(cfg, 3, resolve_backbone(cfg))
    ours = model.backbone.state_dict()
    theirs = net.state_dict()
    mapping = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    compared = 0
    for key, value in ours.items():
        source = next((key.replace(a, b, 1) for a, b in mapping.items() if key.startswith(a)), key)
        assert torch.equal(value, theirs[source]), key
        compared += 1
    assert compared == len([k for k in theirs if not k.startswith("fc.")])
    # and the features are the network's own: C5 equals torchvision's layer4 output
    net.eval(), model.backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
        assert torch.equal(model.backbone(x)[2], ref)
    assert model.backbone_source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_frozen_stages_get_no_gradient_and_do_not_move(tmp_path):
    _, path = saved_resnet(tmp_path)
    backbone = ResNetBackbone(18, norm="bn", freeze_at=2, state_dict=torch.load(path, weights_only=True))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=1e-4)
    backbone.train()
    for _ in range(3):
        optimizer.zero_grad()
        sum(c.square().mean() for c in backbone(torch.randn(2, 3, 64, 64))).backward()
        optimizer.step()
    for stage in (backbone.stem, backbone.layer1):
        assert all(p.grad is None and not p.requires_grad for p in stage.parameters())
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in stage.modules())  # their BN is frozen too
    after = backbone.state_dict()
    frozen = [k for k in after if k.startswith(("stem.", "layer1."))]
    moving = [k for k in after if k.startswith("layer2.") and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert moving and all(not torch.equal(before[k], after[k]) for k in moving)


def test_frozen_bn_buffers_do_not_change_in_train_mode(tmp_path):
    _, path = saved_resnet(tmp_path)
    backbone = ResNetBackbone(18, norm="frozen_bn", freeze_at=0, state_dict=torch.load(path, weights_only=True))
    norms = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 20 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "bn" in k or "downsample.1" in k
              or k.startswith("stem.1")}
    backbone.train()
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        backbone(torch.randn(2, 3, 64, 64) * 3 + 1)[2].mean().backward()
        optimizer.step()
    after = backbone.state_dict()
    assert before and all(torch.equal(before[k], after[k]) for k in before)


def test_group_norm_backbone_has_no_batch_norm():
    backbone = ResNetBackbone(18, norm="group")
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in backbone.modules()) == 20


def test_a_weights_name_that_is_not_cached_offline_is_one_line_naming_the_cache_and_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(backbone_weights.OFFLINE_ENV, "1")
    with pytest.raises(WeightsError) as e:
        resolve("IMAGENET1K_V1", 50)
    text = str(e.value)
    assert "\n" not in text and "IMAGENET1K_V1" in text
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in text and "model.backbone_weights=/path/to/" in text


def test_a_failed_download_is_one_line_too(tmp_path, monkeypatch):
    """With downloads allowed but no network: torchvision's download raises; the error says what to do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(backbone_weights.OFFLINE_ENV, raising=False)

    def no_network(self, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", no_network)
    with pytest.raises(WeightsError) as e:
        resolve("IMAGENET1K_V1", 18)
    assert "cannot be downloaded" in str(e.value) and "name resolution" in str(e.value)


def test_a_cached_weights_name_is_read_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(backbone_weights.OFFLINE_ENV, "1")
    _, path = saved_resnet(tmp_path)
    cached = backbone_weights.cached_file("IMAGENET1K_V1", 18)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    resolved = resolve("IMAGENET1K_V1", 18)
    assert resolved.kind == "torchvision" and resolved.path == str(cached)
    assert resolved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("overrides,expected", [
    (["model.freeze_at=2"], "model.freeze_at=2 is out of range; expected 0 with a randomly initialized backbone"),
    (["model.backbone_norm=frozen_bn"], "frozen BatchNorm needs trained statistics"),
    (["model.backbone_weights=IMAGENET1K_V2"], "a weights name of torchvision's ResNet-18 (IMAGENET1K_V1)"),
    (["model.depth=50", "model.backbone_weights=IMAGENET1K_V2", "model.backbone_norm=group"],
     "'group' needs a GroupNorm ResNet's state dict"),
    (["model.freeze_at=6"], "an integer in [0, 5]"),
    (["model.backbone_norm=batch"], "one of 'bn', 'frozen_bn', 'sync_bn', 'group'"),
])
def test_backbone_settings_that_cannot_work_are_refused_in_one_line(overrides, expected):
    # from the cpu profile made from scratch (its own backbone is pre-trained, with frozen BN and stages)
    scratch = SCRATCH_BACKBONE
    with pytest.raises(ConfigError) as e:
        load_config("cpu", overrides=scratch + overrides)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_missing_weights_file_is_refused_when_paths_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config("cpu", overrides=[f"model.backbone_weights={tmp_path / 'nope.pth'}"], check_paths=True)


def test_a_file_that_is_not_a_resnet_state_dict_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    cfg = load_config("cpu", overrides=[f"model.backbone_weights={path}"])
    with pytest.raises(WeightsError, match="not a state dict of torchvision's ResNet-18"):
        build_model(cfg, 3, resolve_backbone(cfg))


def test_the_paper_profile_fine_tunes_a_pretrained_backbone_and_validates_with_a_weights_file(tmp_path, bccd):
    """The paper's recipe: ImageNet weights, frozen BN, stem + res2 frozen, low-quality matches; with a
    weights file given (and a dataset that exists) the profile validates as it is."""
    paper = load_config("paper")
    assert paper.model.backbone_weights == "IMAGENET1K_V1" and paper.model.backbone_norm == "frozen_bn"
    assert paper.model.freeze_at == 2 and paper.matcher.allow_low_quality_matches
    _, path = saved_resnet(tmp_path, depth=50)
    ann, images = bccd / "annotations", bccd / "images"
    cfg = load_config("paper", overrides=[
        f"model.backbone_weights={path}", f"data.train.annotations={ann / 'instances_train.json'}",
        f"data.train.images={images}", f"data.val.annotations={ann / 'instances_val.json'}",
        f"data.val.images={images}"], check_paths=True)
    assert cfg.model.backbone_weights == str(path)
