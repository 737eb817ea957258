"""A sweep's report as data: its tables, verdicts and settings, built from what MLflow holds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

import tempfile
from pathlib import Path

from retina.config import ConfigError

from .. import declaration as declaration_lib
from ..declaration import Declaration, TableSpec
from ..sweep import TABLES, format_value
from .claims import Verdict, verdicts
from .paper import PAPER
from .rows import OurRow, build_custom_table, build_table, mark_convergence, our_rows


def gpus_of(tags: Dict[str, str]) -> float:
    """The GPUs a trial held: its ``gpus`` tag (a fraction where trials shared one, N for N
    data-parallel workers), else what its device tag says ("cuda ..." 1, "8 x cuda ..." 8), else 0."""
    if tags.get("gpus") not in (None, ""):
        try:
            return float(tags["gpus"])
        except ValueError:
            pass
    device = tags.get("device", "")
    head = device.split(" x ", 1)
    if len(head) == 2 and head[1].startswith("cuda") and head[0].strip().isdigit():
        return float(head[0])
    return 1.0 if device.startswith("cuda") else 0.0


def settings(record) -> Dict[str, Any]:
    """Profile, data, iterations, hardware and compute time of a sweep's runs."""
    def values(key: str, source: str = "params") -> str:
        vs = sorted({format_value(getattr(r, source).get(key)) for r in record.runs if key in getattr(r, source)})
        return ", ".join(vs) or "?"

    gpu_s = sum(r.metrics.get("train_time_s", 0.0) * gpus_of(r.tags) for r in record.runs)
    all_s = sum(r.metrics.get("train_time_s", 0.0) for r in record.runs)
    versions = sorted({r.tags.get("code_version", "?") for r in record.runs})
    flags = []
    if len(versions) > 1:
        flags.append(f"mixed: the runs come from {len(versions)} code versions")
    if any(v.endswith("-dirty") for v in versions):
        flags.append("dirty: some runs were made from a tree with uncommitted changes")
    evaluated = sorted({r.tags["eval_overrides"] for r in record.runs if r.tags.get("eval_overrides")})
    if evaluated:
        flags.append(f"re-scored by `orchestrator evaluate` ({'; '.join(evaluated)})")
    return {
        "profile": record.parent_tags.get("profile") or values("profile", "tags"),
        "data": f"{values('data.source')} (min_size {values('data.min_size')}, max_size {values('data.max_size')})",
        "model": f"ResNet-{values('model.depth')}",
        "iterations": values("train.iterations"),
        "batch_size": values("train.batch_size"),
        "hardware": f"{values('device', 'tags')} on {values('host', 'tags')}",
        "gpu_hours": round(gpu_s / 3600, 3),
        "train_hours": round(all_s / 3600, 3),
        "backbone": values("backbone_init", "tags") if any("backbone_init" in r.tags for r in record.runs) else
        f"{values('model.backbone_weights') or 'random'} (as configured)",
        "code_version": ", ".join(versions),
        "code_flags": flags,
        "overrides": record.parent_tags.get("overrides", ""),
        "seeds": ", ".join(sorted({r.tags.get("seed", "?") for r in record.runs}, key=lambda x: (len(x), x))),
        "variant": getattr(record, "variant", "default"),
    }


@dataclass
class SweepReport:
    name: str
    tables: Dict[str, pd.DataFrame]
    verdicts: Dict[str, List[Verdict]]
    settings: Dict[str, Any]
    plots: Dict[str, str]  # file -> what it shows, or "" (skipped)
    notes: List[str]
    figure4_source: Optional[Tuple[str, str]] = None  # (row label, checkpoint dir) of the FL gamma 2 trial
    declaration: Optional[Declaration] = None  # the sweep's tables and claims
    variant: str = "default"  # which run of the sweep file the report reads


def _figure4_source(rows: Dict[str, List["OurRow"]]) -> Optional[Tuple[str, str]]:
    """The finished FL gamma 2 trial whose checkpoint Figure 4 analyses (the paper uses its best FL model)."""
    for row in rows.get("1b", []):
        for trial in row.done:
            gamma = trial["config"].get("loss.gamma")
            if gamma is not None and float(gamma) == 2.0 and trial["tags"].get("checkpoint"):
                return row.label, trial["tags"]["checkpoint"]
    return None


def declaration_of(record) -> Declaration:
    """The tables and claims the sweep's parent run logged (declaration.json), else those of its logged
    sweep file, else (a store from before declared claims) its paper tables without claims."""
    if record.declaration:
        return declaration_lib.from_dict(record.declaration)
    if record.sweep_yaml:
        from ..sweep import load_sweep

        tags = record.parent_tags
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{record.name}.yaml"
            path.write_text(record.sweep_yaml)
            try:
                return load_sweep(path, profile=tags.get("profile") or None,
                                  overrides=(tags.get("overrides") or "").split(), read_references=False).declaration
            except (ConfigError, OSError, ValueError):
                pass
    declared = [t for t in (record.parent_tags.get("table") or "").split(",") if t in TABLES]
    return Declaration({t: TableSpec(t, TABLES[t], True) for t in declared})


def build_report(record) -> SweepReport:
    rows = our_rows(record)
    declaration = declaration_of(record)
    specs = dict(declaration.tables)
    for t in rows:  # rows of a table the declaration lacks (runs from an older sweep file): shown too
        if t not in specs:
            specs[t] = TableSpec(t, TABLES.get(t, t), t in PAPER)
    tables = {t: build_table(t, rows.get(t, [])) if spec.paper else build_custom_table(spec, rows.get(t, []))
              for t, spec in specs.items()}
    mark_convergence(tables)
    by_key: Dict[Tuple[str, str], OurRow] = {}
    for t, table_rows in rows.items():
        for row in table_rows:
            if not any(trial["stale"] for trial in row.trials):
                by_key.setdefault((t, row.label), row)
    found = verdicts(declaration, by_key, tables)
    found = {t: found.get(t, []) for t in tables}
    report = SweepReport(record.name, tables, found, settings(record), {}, [], _figure4_source(rows))
    report.declaration = declaration
    report.variant = getattr(record, "variant", "default")
    return report
