"""Sweeps of the paper's ablations: sweep files -> trials (sweep), Ray Tune (runner), MLflow
(tracking), the live view (progress) and the command line (``python -m orchestrator``).

Only ``runner`` imports Ray and only ``tracking`` imports MLflow; ``sweep`` is pure.
"""
