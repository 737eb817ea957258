"""Training: the loop (``trainer.fit``), one batch's step, the schedule, checkpoints, data parallelism."""
