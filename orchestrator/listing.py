"""What ``run --dry-run`` prints: each trial's key, rows and settings, the variant and the claims."""
from __future__ import annotations

from .sweep import Sweep, Trial, format_value
from .trial_keys import KEY_LENGTH


def describe_diff(trial: Trial, limit: int = 6) -> str:
    """The settings of ``trial`` that differ from the sweep's base config, e.g. "loss.alpha=0.1"."""
    parts = [f"{k}={format_value(v)}" for k, v in sorted(trial.diff.items())]
    for k, (declared, used) in sorted(trial.scaled.items()):
        parts.append(f"({k} {format_value(declared)}->{format_value(used)} for this profile)")
    if not parts:
        return "(the base config)"
    if len(parts) > limit:
        parts = parts[:limit] + [f"... {len(parts) - limit} more"]
    return " ".join(parts)


def dry_run_listing(sweep: Sweep) -> str:
    """The table `run --dry-run` prints: key, row(s), and what differs from the base."""
    lines = [f"sweep {sweep.name} ({sweep.path}): tables {', '.join(sweep.tables)}; profile {sweep.profile}"
             + (f"; --set {' '.join(sweep.overrides)}" if sweep.overrides else "")
             + f"; {len(sweep.trials)} trials for {sweep.num_rows} rows"]
    width = max([len(t.label) for t in sweep.trials] + [5])
    lines.append(f"{'key':<{KEY_LENGTH}}  {'table':<6} {'row':<{width}}  settings that differ from the base")
    for t in sweep.trials:
        lines.append(f"{t.key:<{KEY_LENGTH}}  {','.join(t.tables):<6} {t.label:<{width}}  {describe_diff(t)}")
    lines.append(f"variant {sweep.variant} (its own parent run in MLflow); claims the report tests:"
                 if sweep.declaration.claims else f"variant {sweep.variant}; no claims declared")
    for c in sweep.declaration.claims:
        seeds = ", ".join(f"{label} {len(sweep.seeds_of(table, label))}" for table, label in c.rows)
        lines.append(f"  {c.table}: {c.kind}: {c.says}" + (f" [seeds: {seeds}]" if seeds else ""))
    return "\n".join(lines)
