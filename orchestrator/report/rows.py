"""Our rows: the trials of a sweep (from MLflow) grouped into the rows of each paper table, and the
table of paper rows beside ours."""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from retina.config import ConfigError

from ..sweep import format_value
from . import curves
from .paper import OUR_METRIC, PAPER, paper_key, paper_table

DONE = ("finished", "diverged")
METRIC_FALLBACK = {"inference_ms_batch1": ("inference_ms",)}


@dataclass
class OurRow:
    table: str
    label: str
    order: int
    trials: List[dict] = field(default_factory=list)  # {key, status, run_id, metrics, config, tags, stale}

    @property
    def status(self) -> str:
        counts: Dict[str, int] = {}
        for t in self.trials:
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        if len(counts) == 1 and len(self.trials) == 1:
            return next(iter(counts))
        return ", ".join(f"{s} x{n}" if n > 1 else s for s, n in counts.items())

    @property
    def done(self) -> List[dict]:
        return [t for t in self.trials if t["status"] in DONE]

    def values(self, metric: str) -> List[float]:
        """``metric`` of each finished (or diverged) seed, by seed; the paper's 1e time is ours at batch 1
        (inference_ms_batch1) where it was measured, else at eval.batch_size (inference_ms)."""
        done = sorted(self.done, key=lambda t: int(t["tags"].get("seed", 0) or 0))
        names = (metric, *METRIC_FALLBACK.get(metric, ()))
        out = []
        for t in done:
            name = next((n for n in names if n in t["metrics"]), None)
            if name is not None:
                out.append(float(t["metrics"][name]))
        return out

    def by_seed(self, metric: str) -> Dict[int, float]:
        """seed -> ``metric`` of each finished (or diverged) seed: what the paired tests pair. A diverged
        seed that logged no AP scores 0 AP (what its detector scores)."""
        names = (metric, *METRIC_FALLBACK.get(metric, ()))
        out = {}
        for t in self.done:
            name = next((n for n in names if n in t["metrics"]), None)
            seed = int(t["tags"].get("seed", 0) or 0)
            if name is not None:
                out[seed] = float(t["metrics"][name])
            elif t["status"] == "diverged" and metric.startswith("AP"):
                out[seed] = 0.0
        return out

    @property
    def diverged(self) -> int:
        return sum(t["status"] == "diverged" for t in self.trials)

    @property
    def converged(self) -> Optional[bool]:
        """The per-row rule (curves.py), the same in every table; None without a curve."""
        return curves.converged(self.curve, curves.DEFAULT_TOLERANCE)

    def stat(self, metric: str) -> Tuple[float, float]:
        values = self.values(metric)
        if not values:
            return float("nan"), float("nan")
        s = pd.Series(values, dtype=float)
        return float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else float("nan")

    @property
    def curve(self) -> "curves.Curve":
        """AP against iterations, the mean over the seeds (empty without evaluations during training)."""
        return curves.mean_curve([t.get("curve") or [] for t in self.done if t["status"] == "finished"])


def _expected_configs(record) -> Dict[str, Dict[str, Any]]:
    """Flattened configs of the sweep's trials, from its sweep.yaml artifact (for trials without a run)."""
    if not record.sweep_yaml:
        return {}
    from retina.config import flatten

    from ..sweep import load_sweep

    tags = record.parent_tags
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{record.name}.yaml"
        path.write_text(record.sweep_yaml)
        try:
            sweep = load_sweep(path, profile=tags.get("profile") or None,
                               overrides=(tags.get("overrides") or "").split())
        except (ConfigError, OSError, ValueError):
            return {}
    out = {}
    for t in sweep.trials:
        cfg = flatten(t.config)
        out[t.key] = {"config": cfg, "scaled": t.scaled}
    return out


def our_rows(record) -> Dict[str, List[OurRow]]:
    """table -> rows of our sweep, in the sweep's order, each with its trials (seeds)."""
    runs = {r.tags.get("trial_key"): r for r in record.runs}
    expected = _expected_configs(record) if any(e["key"] not in runs for e in record.manifest) else {}
    # A stale run (a trial key the last sweep run did not list: an older config of the row, e.g. from
    # before a new config key) gets a row of its own beside the current one, never a seed of it.
    rows: Dict[Tuple[str, str, bool], OurRow] = {}
    parent_running = record.parent_tags.get("status") == "running"

    def add(table: str, label: str, trial: dict) -> None:
        row = rows.get((table, label, trial["stale"]))
        if row is None:
            row = rows[(table, label, trial["stale"])] = OurRow(table, label, len(rows))
        row.trials.append(trial)

    listed = set()
    for entry in record.manifest:
        key = entry["key"]
        listed.add(key)
        run = runs.get(key)
        if run is not None:
            status = run.tags.get("status", "running")
            if status == "running" and not parent_running:
                status = "interrupted"
            trial = {"key": key, "status": status, "run_id": run.run_id, "metrics": run.metrics,
                     "config": run.params, "tags": run.tags, "stale": False, "curve": run.ap_curve}
        else:
            exp = expected.get(key, {})
            scaled = exp.get("scaled") or {}
            tags = {"scaled": ", ".join(f"{k} {format_value(a)}->{format_value(b)}" for k, (a, b) in scaled.items())}
            trial = {"key": key, "status": "missing", "run_id": "", "metrics": {}, "config": exp.get("config", {}),
                     "tags": tags, "stale": False}
        for row in entry.get("rows", []):
            add(row["table"], row["label"], dict(trial))
    for key, run in runs.items():  # runs the last sweep run did not list (or no manifest): shown, not dropped
        if key in listed:
            continue
        status = run.tags.get("status", "running")
        trial = {"key": key, "status": status if not record.manifest else f"{status} (not in sweep)",
                 "run_id": run.run_id, "metrics": run.metrics, "config": run.params, "tags": run.tags,
                 "stale": bool(record.manifest), "curve": run.ap_curve}
        for name, label in run.tags.items():
            if name.startswith("row."):
                for one in label.split(" | "):
                    add(name[4:], one, dict(trial))
    out: Dict[str, List[OurRow]] = {}
    for row in sorted(rows.values(), key=lambda r: r.order):
        out.setdefault(row.table, []).append(row)
    return out


def fmt(x: float, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def build_table(table: str, rows: List[OurRow]) -> pd.DataFrame:
    """One line per (paper row, our row): paper rows in the paper's order (a paper row without a trial
    shows as "not in sweep"), then our rows that match no paper row. Columns: the paper's key columns,
    ``label``, ``status``, ``seeds``, per metric ``<m>`` (ours, mean over seeds), ``<m>_std``,
    ``<m>_paper``, ``<m>_diff``, ``AP_seeds`` (AP of each seed), ``curve`` (AP against iterations, mean
    over seeds), ``run_ids``, ``primary`` (the row the verdicts use). :func:`mark_convergence` adds
    ``gain_last_quarter``, ``converged`` and ``convergence_tolerance``."""
    paper = paper_table(table)
    keys, metrics = PAPER[table][1], PAPER[table][2]
    by_key: Dict[Tuple[str, ...], List[OurRow]] = {}
    unmatched: List[OurRow] = []
    for row in rows:
        ks = {paper_key(table, t["config"], t["tags"]) for t in row.trials} - {None}
        key = next(iter(ks)) if len(ks) == 1 else None
        if key is not None and (paper[keys].apply(tuple, axis=1) == key).any():
            by_key.setdefault(key, []).append(row)
        else:
            unmatched.append(row)
    lines = []

    def line(paper_row: Optional[pd.Series], ours: Optional[OurRow], primary: bool) -> dict:
        d: Dict[str, Any] = {k: (paper_row[k] if paper_row is not None else "") for k in keys}
        d["label"] = ours.label if ours else ""
        d["status"] = ours.status if ours else "not in sweep"
        d["seeds"] = len(ours.done) if ours else 0
        for m in metrics:
            mean, std = ours.stat(OUR_METRIC.get(m, m)) if ours else (float("nan"), float("nan"))
            ref = float(paper_row[m]) if paper_row is not None and m in paper_row else float("nan")
            d[m], d[f"{m}_std"], d[f"{m}_paper"], d[f"{m}_diff"] = mean, std, ref, mean - ref
        if table == "5.1":
            d["paper_outcome"] = paper_row["outcome"] if paper_row is not None else ""
        d["AP_seeds"] = ours.values("AP") if ours else []
        d.update(provenance(ours))
        d["curve"] = ours.curve if ours else []
        d["run_ids"] = " ".join(t["run_id"] for t in ours.trials if t["run_id"]) if ours else ""
        d["primary"] = primary
        return d

    for _, p in paper.iterrows():
        matched = by_key.get(tuple(p[k] for k in keys), [])
        if not matched:
            lines.append(line(p, None, True))
        for i, ours in enumerate(matched):
            lines.append(line(p, ours, i == 0 and not any(t["stale"] for t in ours.trials)))
    for ours in unmatched:
        lines.append(line(None, ours, False))
    df = pd.DataFrame(lines)
    df.insert(0, "table", table)
    return df


def provenance(ours: Optional[OurRow]) -> Dict[str, str]:
    """Where a row's numbers come from: AP per seed ("seed: AP; ..."), trial keys and code versions."""
    if ours is None:
        return {"AP_by_seed": "", "trial_keys": "", "code_versions": ""}
    by_seed = ours.by_seed("AP")
    return {"AP_by_seed": "; ".join(f"{seed}: {ap:.3f}" for seed, ap in sorted(by_seed.items())),
            "trial_keys": " ".join(t["key"] for t in ours.trials),
            "code_versions": " ".join(sorted({t["tags"].get("code_version", "?") for t in ours.trials if t["run_id"]}))}


CUSTOM_METRICS = ("AP", "AP50", "AP75")  # the columns of a user's table (more where its reference has them)


def custom_metrics(spec) -> List[str]:
    """The metric columns of a user's table: AP, AP50, AP75, then its reference's other metric columns."""
    from ..declaration import METRICS

    extra = [c for values in (spec.reference or {}).values() for c in values if c in METRICS]
    return list(dict.fromkeys([*CUSTOM_METRICS, *extra]))


def build_custom_table(spec, rows: List[OurRow]) -> pd.DataFrame:
    """A user's table: one line per row of the sweep (its label is its key), in the sweep's order.
    Columns as :func:`build_table`'s, the reference's values as ``<m>_ref`` (NaN without one)."""
    reference = spec.reference or {}
    lines = []
    for ours in rows:
        d: Dict[str, Any] = {"label": ours.label, "status": ours.status, "seeds": len(ours.done)}
        for m in custom_metrics(spec):
            mean, std = ours.stat(m)
            ref = reference.get(ours.label, {}).get(m, float("nan"))
            d[m], d[f"{m}_std"], d[f"{m}_ref"], d[f"{m}_diff"] = mean, std, ref, mean - ref
        d["AP_seeds"] = ours.values("AP")
        d.update(provenance(ours))
        d["curve"] = ours.curve
        d["run_ids"] = " ".join(t["run_id"] for t in ours.trials if t["run_id"])
        d["primary"] = not any(t["stale"] for t in ours.trials)
        lines.append(d)
    df = pd.DataFrame(lines, columns=None if lines else ["label", "status", "seeds", "AP", "AP_std", "AP_ref",
                                                          "AP_diff", "AP_seeds", "curve", "run_ids", "primary"])
    df.insert(0, "table", spec.name)
    return df


def mark_convergence(tables: Dict[str, pd.DataFrame]) -> None:
    """Add to each table the AP gained over the last quarter of each row's schedule and whether it had
    converged: the per-row rule of curves.py (gained at most curves.DEFAULT_TOLERANCE AP), the same in
    every table."""
    tolerance = curves.DEFAULT_TOLERANCE
    for df in tables.values():
        df["gain_last_quarter"] = [curves.last_quarter_gain(c) for c in df["curve"]]
        df["converged"] = pd.Series([curves.converged(c, tolerance) for c in df["curve"]], index=df.index, dtype=object)
        df["convergence_tolerance"] = tolerance
