"""Model structure and initialization."""
import math

import pytest
import torch

from retina.modeling.anchors import AnchorGenerator
from retina.modeling.retinanet import RetinaNet, prior_bias

from .conftest import fill_freed_memory_with_nan


def test_prior_init_gives_mean_score_pi_on_random_input():
    torch.manual_seed(0)
    model = RetinaNet(5, depth=18, fpn_channels=64, head_convs=2, prior_prob=0.01).eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.randn(2, 3, 128, 128))["cls_logits"])
    assert scores.mean().item() == pytest.approx(0.01, rel=0.05)


def test_prior_off_gives_mean_score_one_half():
    torch.manual_seed(0)
    model = RetinaNet(5, depth=18, fpn_channels=64, head_convs=2, prior_init=False).eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.randn(2, 3, 128, 128))["cls_logits"])
    assert scores.mean().item() == pytest.approx(0.5, abs=0.02)
    assert prior_bias(0.01) == pytest.approx(-math.log(99))


def test_subnet_init_is_gaussian_001_with_zero_bias():
    model = RetinaNet(3, depth=18, fpn_channels=128, head_convs=4)
    conv = model.box_subnet.tower[0]
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert conv.bias.abs().max().item() == 0.0


def test_subnets_have_separate_parameters_and_configured_depth():
    model = RetinaNet(3, depth=18, fpn_channels=64, head_convs=3)
    convs = [m for m in model.cls_subnet.tower if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3
    cls_ids = {id(p) for p in model.cls_subnet.parameters()}
    assert not cls_ids & {id(p) for p in model.box_subnet.parameters()}


def test_p6_comes_from_c5_and_p7_from_relu_p6():
    model = RetinaNet(3, depth=50, fpn_channels=256, head_convs=1)
    assert model.fpn.p6.in_channels == 2048  # C5 of ResNet-50, not P5
    c5 = torch.randn(1, 2048, 4, 4)
    expected_p7 = model.fpn.p7(torch.relu(model.fpn.p6(c5)))
    c3, c4 = torch.randn(1, 512, 16, 16), torch.randn(1, 1024, 8, 8)
    torch.testing.assert_close(model.fpn([c3, c4, c5])[4], expected_p7)


@pytest.mark.parametrize("c5_size", [(2, 2), (1, 3), (3, 1)])
def test_the_pyramid_tops_gradients_under_cpu_bf16_autocast_on_one_wide_maps_match_float64(c5_size):
    """P6 and P7 on maps one position wide, in bf16 under CPU autocast: their weight gradients match a
    float64 computation (oneDNN's bf16 kernel leaves memory garbage in the padding taps there;
    retina/modeling/autocast_conv.py). Freed NaN-filled buffers beforehand make that garbage show.
    Each level's gradient comes from its own output only (P6's through P7 would add ReLU flips)."""
    from retina.modeling.fpn import FPN
    torch.manual_seed(0)
    fpn = FPN((8, 16, 32), 32)
    reference = FPN((8, 16, 32), 32).double()
    reference.load_state_dict(fpn.state_dict())
    h, w = c5_size
    for _ in range(10):
        c = [torch.randn(2, 8, 4 * h, 4 * w), torch.randn(2, 16, 2 * h, 2 * w), torch.randn(2, 32, h, w)]
        c = [x.bfloat16().double() for x in c]  # values bf16 holds exactly
        for level, conv in ((3, "p6"), (4, "p7")):
            fill_freed_memory_with_nan()
            fpn.zero_grad(set_to_none=True)
            reference.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fpn([x.float() for x in c])[level]
            upstream = torch.randn(out.shape, dtype=torch.float64)
            (out.float() * upstream.float()).sum().backward()
            (reference(c)[level] * upstream).sum().backward()
            got, want = getattr(fpn, conv).weight.grad.double(), getattr(reference, conv).weight.grad
            error = (got - want).abs().nan_to_num(float("inf")).max() / want.abs().max()
            assert error < 0.03, (conv, float(error))


def test_output_shapes_follow_anchors():
    model = RetinaNet(7, depth=18, fpn_channels=32, head_convs=1,
                      anchor_generator=AnchorGenerator(8, 2, [1.0, 2.0])).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 96))
    r = out["anchors"].shape[0]
    assert r == 4 * sum(h * w for h, w in out["shapes"])
    assert out["cls_logits"].shape == (2, r, 7) and out["box_deltas"].shape == (2, r, 4)


def test_postprocess_keeps_at_most_max_detections_with_classwise_nms():
    torch.manual_seed(0)
    model = RetinaNet(2, depth=18, fpn_channels=32, head_convs=1, prior_init=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
        out["cls_logits"].normal_(0, 3)
        dets = model.postprocess(out, [(128, 128)], max_detections=50)[0]
    assert 0 < len(dets["scores"]) <= 50
    assert bool((dets["scores"] > 0.05).all())
    assert dets["boxes"].min() >= 0 and dets["boxes"].max() <= 128
    from torchvision.ops import box_iou
    for c in (0, 1):  # after NMS no two same-class boxes overlap above 0.5
        b = dets["boxes"][dets["labels"] == c]
        iou = box_iou(b, b).fill_diagonal_(0)
        assert iou.numel() == 0 or iou.max() <= 0.5 + 1e-6


def test_compiled_network_equals_eager_in_outputs_and_gradients():
    """train.compile traces RetinaNet.dense through torch.compile (dynamo + AOT autograd; the
    code-generating inductor is left out here: minutes on 2 cores); float64, so any change in what is
    computed shows. The state_dict keys stay the module's own (checkpoints unchanged)."""
    torch.manual_seed(0)
    model = RetinaNet(3, depth=18, fpn_channels=16, head_convs=1).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out["cls_logits"].square().sum() + out["box_deltas"].sum()).backward()
        return out, [p.grad.clone() for p in model.parameters()]

    eager, eager_grads = run()
    keys = list(model.state_dict())
    model.compile_dense("default", backend="aot_eager")
    compiled, compiled_grads = run()
    assert model._dense_fn is not None and list(model.state_dict()) == keys
    assert compiled["shapes"] == eager["shapes"] and torch.equal(compiled["anchors"], eager["anchors"])
    torch.testing.assert_close(compiled["cls_logits"], eager["cls_logits"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(compiled["box_deltas"], eager["box_deltas"], rtol=1e-12, atol=1e-12)
    for g_compiled, g_eager in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(g_compiled, g_eager, rtol=1e-10, atol=1e-12)
    model.compile_dense("")
    assert model._dense_fn is None
