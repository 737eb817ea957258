"""Figure 4's loss distribution: Lorenz curves of the focal loss over positives and negatives."""
import torch

from retina.analysis.loss_distribution import collect_logits, loss_distribution, lorenz


def test_lorenz_curve_of_hand_worked_losses():
    # losses 2, 1, 1 sorted: 1, 1, 2 of total 4 -> the easiest third holds 25%, two thirds 50%
    torch.testing.assert_close(lorenz(torch.tensor([2.0, 1.0, 1.0]), points=4), torch.tensor([0.0, 0.25, 0.5, 1.0]))


def test_higher_gamma_concentrates_the_negatives_loss_on_few_samples():
    g = torch.Generator().manual_seed(0)
    logits = {"positives": torch.randn(500, generator=g) + 1.0, "negatives": torch.randn(20000, generator=g) * 2 - 5}
    dist = loss_distribution(logits)
    for group in ("positives", "negatives"):
        for curve in dist[group].values():
            assert curve[0] == 0 and abs(float(curve[-1]) - 1) < 1e-6 and bool((curve.diff() >= -1e-7).all())
    neg = dist["negatives"]
    at80 = [float(neg[gm][160]) for gm in (0.0, 0.5, 1.0, 2.0)]  # share of the easiest 80%
    assert at80 == sorted(at80, reverse=True) and at80[3] < at80[0] / 2


def test_collect_logits_splits_every_used_anchor_class_pair(tmp_path):
    from retina.config import load_config
    from retina.train import fit
    from tests.test_train import TINY

    cfg = load_config("cpu", overrides=TINY + [f"data.synthetic.cache_dir={tmp_path / 's'}", "train.iterations=2"])
    fit(cfg, checkpoint_dir=str(tmp_path))
    logits = collect_logits(tmp_path / "checkpoint.pt", max_images=4)
    assert logits["positives"].numel() > 0
    total = logits["positives"].numel() + logits["negatives"].numel()
    assert total % cfg.data.synthetic.num_classes == 0  # whole anchors, every class
