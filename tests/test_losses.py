"""Focal loss against torchvision's reference, its limits, and OHEM's selection."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from retina.modeling.losses import RetinaLoss, focal_loss
from retina.modeling.matcher import BACKGROUND, IGNORE
from retina.modeling.sampling import ohem_select


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def random_case(seed: int = 0, shape=(64, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    targets = (torch.rand(shape, generator=g) < 0.2).float()
    return logits, targets


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.75, 0.0), (0.5, 0.5), (0.25, 1.0), (0.25, 5.0), (0.9, 0.2)])
def test_focal_loss_equals_torchvision_values_and_gradients(alpha, gamma):
    logits, targets = random_case()
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    ours = focal_loss(ours_in, targets, alpha, gamma)
    ref = sigmoid_focal_loss(ref_in, targets, alpha=alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)


def test_focal_loss_at_gamma_zero_equals_alpha_balanced_ce():
    logits, targets = random_case(1)
    alpha = 0.75
    weights = alpha * targets + (1 - alpha) * (1 - targets)
    expected = weights * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(focal_loss(logits, targets, alpha, 0.0), expected)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_easy_example_focal_loss_is_ce_times_modulating_factor(gamma):
    p = torch.tensor([0.9, 0.99, 0.999])  # easy positives: p_t = p
    targets = torch.ones(3)
    ce = focal_loss(logit(p), targets, alpha=0.5, gamma=0.0)
    fl = focal_loss(logit(p), targets, alpha=0.5, gamma=gamma)
    torch.testing.assert_close(fl, ce * (1 - p) ** gamma, rtol=1e-4, atol=0)
    assert bool((fl < ce).all())


def test_focal_loss_gradient_is_finite_for_saturated_logits_and_small_gamma():
    # sigmoid(+-40) is exactly 0 or 1 in float32, where d/dp (1 - p_t)^0.1 is infinite.
    logits = torch.tensor([40.0, -40.0, 40.0, -40.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    focal_loss(logits, targets, alpha=0.25, gamma=0.1).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_ohem_keeps_highest_loss_anchors_after_nms():
    # Anchors 0 and 1 overlap heavily (IoU 0.81); 2 and 3 are apart. Losses 5, 4, 3, 1.
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9.0], [20, 20, 30, 30], [40, 40, 50, 50.0]])
    losses = torch.tensor([5.0, 4.0, 3.0, 1.0])
    labels = torch.tensor([BACKGROUND] * 4)
    kept = ohem_select(losses, anchors, labels, batch_size=2, nms_thresh=0.7, pos_ratio=None)
    assert kept.tolist() == [True, False, True, False]  # 1 suppressed by 0; the top 2 of what is left


def test_ohem_never_keeps_ignored_anchors():
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50.0]])
    losses = torch.tensor([9.0, 1.0, 2.0])
    labels = torch.tensor([IGNORE, BACKGROUND, BACKGROUND])
    kept = ohem_select(losses, anchors, labels, batch_size=2, nms_thresh=0.7, pos_ratio=None)
    assert kept.tolist() == [False, True, True]


def test_ohem_one_to_three_ratio_is_honoured():
    g = torch.Generator().manual_seed(0)
    n = 400
    xy = torch.rand(n, 2, generator=g) * 1000
    anchors = torch.cat([xy, xy + 8], dim=1)  # small, mostly disjoint boxes
    labels = torch.full((n,), BACKGROUND)
    labels[:30] = 0  # 30 positives, 370 negatives
    losses = torch.rand(n, generator=g)
    kept = ohem_select(losses, anchors, labels, batch_size=64, nms_thresh=0.7, pos_ratio=0.25)
    num_pos, num_neg = int((kept & (labels >= 0)).sum()), int((kept & (labels < 0)).sum())
    assert (num_pos, num_neg) == (16, 48)
    # The positives kept are the highest-loss positives.
    pos_losses = losses[:30]
    assert set(kept[:30].nonzero().flatten().tolist()) == set(pos_losses.topk(16).indices.tolist())


def test_ohem_one_to_three_with_few_positives_keeps_three_negatives_each():
    anchors = torch.tensor([[i * 20.0, 0, i * 20 + 10, 10] for i in range(20)])
    labels = torch.full((20,), BACKGROUND)
    labels[[3, 7]] = 0
    kept = ohem_select(torch.rand(20), anchors, labels, batch_size=128, nms_thresh=0.7, pos_ratio=0.25)
    assert int((kept & (labels >= 0)).sum()) == 2 and int((kept & (labels < 0)).sum()) == 6


def test_retina_loss_normalizes_by_foreground_count_and_skips_ignored():
    k = 2
    logits = torch.zeros(1, 4, k)
    deltas = torch.zeros(1, 4, 4)
    anchors = torch.tensor([[0, 0, 10, 10.0]] * 4)
    labels = torch.tensor([[0, 1, BACKGROUND, IGNORE]])  # two foreground anchors, matched to gt 0 and 1
    gt_boxes = torch.tensor([[[0, 0, 10, 10.0], [0, 0, 20, 20.0]]])
    gt_labels = torch.tensor([[0, 1]])
    out = RetinaLoss(alpha=0.25, gamma=0.0, smooth_l1_beta=0.0)(logits, deltas, anchors, labels, gt_boxes, gt_labels)
    # logits 0: every element's CE is log 2; 3 anchors x 2 classes count (ignored one excluded):
    # positives (2 elements) weigh 0.25, negatives (4) weigh 0.75.
    expected_cls = (2 * 0.25 + 4 * 0.75) * math.log(2) / 2
    assert out.num_foreground == 2
    assert out.loss_cls.item() == pytest.approx(expected_cls, rel=1e-6)
    # Box targets: (0, 0, 0, 0) for gt 0; gt 1 is twice the anchor: dx = dy = 0.5, dw = dh = log 2.
    assert out.loss_box.item() == pytest.approx((0.5 + 0.5 + 2 * math.log(2)) / 2, rel=1e-6)


def ohem_full(losses, anchors, labels, batch_size, nms_thresh, pos_ratio):
    """The straightforward computation the fast OHEM must equal: every candidate through one NMS."""
    from torchvision.ops import nms

    from retina.modeling.sampling import loss_order_keys

    candidates = (labels != IGNORE).nonzero(as_tuple=True)[0]
    order = candidates[loss_order_keys(losses)[candidates].sort(descending=True).indices]
    keep = order[nms(anchors[order].float(), torch.arange(len(order), 0, -1, dtype=torch.float32), nms_thresh)]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    if pos_ratio is None:
        mask[keep[:batch_size]] = True
        return mask
    is_pos = labels[keep] >= 0
    pos, neg = keep[is_pos], keep[~is_pos]
    num_pos = min(len(pos), int(batch_size * pos_ratio))
    mask[pos[:num_pos]] = True
    mask[neg[:min(len(neg), int(round(num_pos * (1 - pos_ratio) / pos_ratio)), batch_size - num_pos)]] = True
    return mask


OHEM_CASES = ["random", "ties", "low-loss positives", "no positives", "all ignored but few", "dense overlap"]


@pytest.mark.parametrize("graph_from", [4096, 0], ids=["prefix", "graph"])
@pytest.mark.parametrize("case", OHEM_CASES)
@pytest.mark.parametrize("batch_size,nms_thresh,pos_ratio", [(128, 0.7, None), (16, 0.5, None), (128, 0.5, 0.25),
                                                             (256, 0.5, 0.25), (8, 0.7, 0.25)])
def test_fast_ohem_keeps_exactly_what_nms_over_all_anchors_keeps(case, batch_size, nms_thresh, pos_ratio, graph_from,
                                                                 monkeypatch):
    """The prefix NMS, batched over 3 images, against the full NMS per image, on the anchors of a
    160x224 input (the paper's 9 anchors per location): random losses, many ties, positives with the
    lowest losses (the prefix must grow to the end), no positives, almost everything ignored, and a
    loss that rises along the anchors (neighbours suppress each other all the way down). "graph":
    every image that the first prefix does not decide finishes through the overlap graph."""
    from retina.modeling import sampling as losses_module
    from retina.modeling.anchors import AnchorGenerator, feature_shapes

    monkeypatch.setattr(losses_module, "OHEM_GRAPH_FROM", graph_from)

    anchors = AnchorGenerator()(feature_shapes(160, 224), device=torch.device("cpu"))
    r = len(anchors)
    g = torch.Generator().manual_seed(OHEM_CASES.index(case))
    losses = torch.rand(3, r, generator=g)
    labels = torch.full((3, r), BACKGROUND)
    for i in range(3):
        labels[i, torch.randperm(r, generator=g)[:25]] = 0
        labels[i, torch.randperm(r, generator=g)[:200]] = IGNORE
    if case == "ties":
        losses = (losses * 4).floor()
    elif case == "low-loss positives":
        losses = losses.masked_fill(labels >= 0, 0.0) + (labels >= 0) * torch.rand(3, r, generator=g) * 1e-3
    elif case == "no positives":
        labels[labels >= 0] = BACKGROUND
    elif case == "all ignored but few":
        labels[:, 10:] = IGNORE
    elif case == "dense overlap":
        losses = torch.arange(r, dtype=torch.float32).expand(3, r).clone()
    fast = ohem_select(losses, anchors, labels, batch_size, nms_thresh, pos_ratio)
    for i in range(3):
        assert torch.equal(fast[i], ohem_full(losses[i], anchors, labels[i], batch_size, nms_thresh, pos_ratio)), i


@pytest.mark.parametrize("boxes_of", ["anchors", "random boxes"])
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7, 0.9])
def test_greedy_nms_over_the_overlap_graph_keeps_what_torchvision_nms_keeps(boxes_of, thresh):
    """The overlap graph holds every pair torchvision's NMS would suppress (and no other): greedy NMS
    over it, in a random order, keeps exactly torchvision's boxes, on the anchors of a 160x224 input
    and on random boxes of many sizes and shapes (anchor-free: the bucketing and the centre bound)."""
    from torchvision.ops import nms

    from retina.modeling.anchors import AnchorGenerator, feature_shapes
    from retina.modeling.nms_graph import greedy_nms, overlap_graph

    g = torch.Generator().manual_seed(int(thresh * 10))
    if boxes_of == "anchors":
        boxes = AnchorGenerator()(feature_shapes(160, 224), device=torch.device("cpu"))
    else:
        xy = torch.rand(3000, 2, generator=g) * 300
        wh = torch.exp(torch.rand(3000, 2, generator=g) * 4) * 2  # 2 .. 110 px, any aspect
        boxes = torch.cat([xy, xy + wh], 1)
    order = torch.randperm(len(boxes), generator=g)
    expected = order[nms(boxes[order].float(), torch.arange(len(boxes), 0, -1, dtype=torch.float32), thresh)]
    kept = greedy_nms(order, overlap_graph(boxes, thresh), lambda position, box: False)
    assert kept == expected.tolist()
