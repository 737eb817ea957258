"""The learning-rate schedule: linear warm-up, then steps (fractions of the run), as the paper's."""
from __future__ import annotations


def learning_rate(cfg_train, iteration: int) -> float:
    """lr at 0-based ``iteration``: linear warm-up from ``warmup_factor`` to 1, then x lr_gamma at each
    step (fractions of the run)."""
    t = cfg_train
    factor = 1.0
    if iteration < t.warmup_iters:
        alpha = iteration / t.warmup_iters
        factor = t.warmup_factor * (1 - alpha) + alpha
    steps_passed = sum(iteration >= int(round(s * t.iterations)) for s in t.lr_steps)
    return t.lr * factor * t.lr_gamma ** steps_passed
