"""Anchors, box coding and IoU assignment on hand-worked boxes."""
import math

import pytest
import torch
from torchvision.ops import box_iou

from retina.modeling.anchors import AnchorGenerator, feature_shapes
from retina.modeling.box_regression import decode, encode
from retina.modeling.boxes import pad_targets, pairwise_iou
from retina.modeling.matcher import BACKGROUND, IGNORE, match_anchors


def test_default_anchors_are_nine_per_location_with_paper_sizes():
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location == 9
    assert gen.sizes == [32, 64, 128, 256, 512]
    cell = gen.cell[0]  # P3, centred at 0
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    areas = (w * h).reshape(3, 3)  # scale-major, then ratio
    for k in range(3):
        torch.testing.assert_close(areas[k], torch.full((3,), (32 * 2 ** (k / 3)) ** 2))
    torch.testing.assert_close((h / w)[:3], torch.tensor([0.5, 1.0, 2.0]))
    # largest anchor of P7: 512 * 2^(2/3) ~ 813 px, as the paper says
    assert math.sqrt(float(((gen.cell[4][:, 2] - gen.cell[4][:, 0]) * (gen.cell[4][:, 3] - gen.cell[4][:, 1])).max())) == pytest.approx(812.7, abs=0.1)


def test_anchor_count_for_600x1000_input_is_113193():
    # P3..P7 of 600x1000: 75x125, 38x63, 19x32, 10x16, 5x8 locations, 9 anchors each.
    assert feature_shapes(600, 1000) == [(75, 125), (38, 63), (19, 32), (10, 16), (5, 8)]
    assert AnchorGenerator().num_anchors(600, 1000) == 113193
    shapes = feature_shapes(600, 1000)
    assert AnchorGenerator()(shapes).shape == (113193, 4)


@pytest.mark.parametrize("n,ratios,expected", [(1, [1.0], 1), (2, [1.0], 2), (4, [0.5, 1.0, 2.0], 12)])
def test_scales_per_octave_and_ratios_set_anchors_per_location(n, ratios, expected):
    gen = AnchorGenerator(32, n, ratios)
    assert gen.num_anchors_per_location == expected
    assert gen.scales == [2 ** (k / n) for k in range(n)]


def test_feature_shapes_match_the_real_backbone():
    from retina.modeling.retinanet import RetinaNet

    model = RetinaNet(3, depth=18, fpn_channels=32, head_convs=1).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 97, 130))
    assert out["shapes"] == feature_shapes(97, 130)
    assert out["anchors"].shape[0] == AnchorGenerator().num_anchors(97, 130)


def test_anchors_are_centred_on_cells():
    gen = AnchorGenerator(32, 1, [1.0])
    p3 = gen.level_anchors(0, 2, 3)  # 2 rows, 3 columns, stride 8
    centres = (p3[:, :2] + p3[:, 2:]) / 2
    assert centres.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_box_coding_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(100, 2, generator=g) * 100
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(100, 2, generator=g) * 50], 1)
    targets = torch.rand(100, 2, generator=g) * 100
    targets = torch.cat([targets, targets + 1 + torch.rand(100, 2, generator=g) * 80], 1)
    torch.testing.assert_close(decode(anchors, encode(anchors, targets)), targets, rtol=1e-5, atol=1e-3)


def test_box_coding_of_a_hand_worked_box():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    target = torch.tensor([[5.0, 0.0, 25.0, 20.0]])  # centre (15, 10), 20 x 20
    torch.testing.assert_close(encode(anchor, target), torch.tensor([[1.0, 0.0, math.log(2), 0.0]]))


def test_pairwise_iou_equals_torchvision_box_iou():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(7, 2, generator=g) * 50
    a = torch.cat([a, a + torch.rand(7, 2, generator=g) * 30 + 1], 1)
    b = torch.rand(11, 2, generator=g) * 50
    b = torch.cat([b, b + torch.rand(11, 2, generator=g) * 30 + 1], 1)
    torch.testing.assert_close(pairwise_iou(a, b), box_iou(a, b))


def _labels(anchors, gts, crowd=None, **kw):
    boxes = [torch.tensor(gts, dtype=torch.float32).reshape(-1, 4)]
    labels = [torch.zeros(len(gts), dtype=torch.long)]
    iscrowd = [torch.tensor(crowd if crowd is not None else [False] * len(gts), dtype=torch.bool)]
    b, _, c, v = pad_targets(boxes, labels, iscrowd, torch.device("cpu"))
    return match_anchors(torch.tensor(anchors, dtype=torch.float32), b, v, c, **kw)[0].tolist()


def test_assignment_thresholds_on_hand_worked_boxes():
    gt = [[0, 0, 10, 10]]
    anchors = [
        [0, 0, 10, 10],  # IoU 1.0        -> foreground (gt 0)
        [0, 0, 10, 5],   # IoU 0.5        -> foreground (>= 0.5)
        [0, 0, 10, 4.5],  # IoU 0.45      -> ignored ([0.4, 0.5))
        [0, 0, 10, 4],   # IoU 0.4        -> ignored (0.4 is not < 0.4)
        [0, 0, 10, 3.9],  # IoU 0.39      -> background
        [50, 50, 60, 60],  # IoU 0        -> background
    ]
    assert _labels(anchors, gt) == [0, 0, IGNORE, IGNORE, BACKGROUND, BACKGROUND]


def test_assignment_picks_the_best_gt_and_low_quality_switch():
    gts = [[0, 0, 10, 10], [100, 100, 130, 130]]
    anchors = [[1, 1, 10, 10], [100, 100, 120, 110], [100, 100, 129, 129]]
    # anchor 1 has IoU 200/900 = 0.22 with gt 1 (background); anchor 2 has 841/900 = 0.93 (gt 1)
    assert _labels(anchors, gts) == [0, BACKGROUND, 1]
    gts_small = [[0, 0, 10, 10], [200, 200, 203, 203]]  # gt 1 has no anchor above 0.4
    anchors2 = [[0, 0, 10, 10], [200, 200, 210, 210]]  # IoU 9/100 with gt 1
    assert _labels(anchors2, gts_small) == [0, BACKGROUND]
    assert _labels(anchors2, gts_small, allow_low_quality_matches=True) == [0, 1]


def test_crowd_boxes_are_never_foreground_and_their_anchors_are_ignored():
    gts = [[0, 0, 10, 10], [50, 50, 90, 90]]
    anchors = [[0, 0, 10, 10], [50, 50, 90, 90], [200, 200, 210, 210]]
    assert _labels(anchors, gts, crowd=[False, True]) == [0, IGNORE, BACKGROUND]


def test_images_without_boxes_are_all_background():
    anchors = torch.tensor([[0, 0, 10, 10.0], [5, 5, 20, 20]])
    b, _, c, v = pad_targets([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
                             [torch.zeros(0, dtype=torch.bool)], torch.device("cpu"))
    assert match_anchors(anchors, b, v, c)[0].tolist() == [BACKGROUND, BACKGROUND]
