"""``python -m orchestrator report [SWEEP ...] [--out DIR]``: the paper's tables from what MLflow holds.

For each sweep (an MLflow experiment; by name or sweep file; default every sweep in the store) the
report writes ``<out>/<sweep>/``: ``table.md``, ``table.csv``, ``table.tex`` (booktabs), one PNG plot
per table and ``summary.json``; then ``<out>/README.md`` indexes every sweep reported there, with
its verdicts and settings. The sweep's folder is also logged as artifact ``report/`` of its parent run.

Rows: a trial belongs to the rows the sweep declares for it (``trials.json`` / tag ``row.<table>``);
which paper row that is follows from the trial's config values (1a: alpha at gamma 0; 1b: gamma,
alpha; 1c: scales per octave, number of aspect ratios; 1d: loss kind, OHEM batch, NMS, 1:3; 1e:
depth and the declared image scale, see tag ``scaled``; 5.1: prior initialization). Paper rows with
no trial show as "not in sweep", declared trials without a run as "missing"; trials with several
seeds are one row with mean and standard deviation. Verdicts are computed (see ``verdicts``).
MLflow is read and written through ``orchestrator.tracking`` only.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from retina.config import PROJECT_ROOT, ConfigError

from .sweep import TABLES, format_value

DEFAULT_OUT = PROJECT_ROOT / "results"
PAPER_DIR = PROJECT_ROOT / "results" / "paper"
DONE = ("finished", "diverged")

# paper table -> (csv file, key columns, metric columns as in the csv)
PAPER: Dict[str, Tuple[Optional[str], List[str], List[str]]] = {
    "1a": ("table1a_alpha_ce.csv", ["alpha"], ["AP", "AP50", "AP75"]),
    "1b": ("table1b_gamma_fl.csv", ["gamma", "alpha"], ["AP", "AP50", "AP75"]),
    "1c": ("table1c_anchors.csv", ["num_scales", "num_aspect_ratios"], ["AP", "AP50", "AP75"]),
    "1d": ("table1d_ohem_vs_fl.csv", ["method", "batch_size", "nms_thr"], ["AP", "AP50", "AP75"]),
    "1e": ("table1e_speed_accuracy.csv", ["depth", "scale"], ["AP", "AP50", "AP75", "APS", "APM", "APL", "time_ms"]),
    "5.1": (None, ["prior_init"], ["AP"]),
}
# paper csv metric column -> our MLflow metric
OUR_METRIC = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APS": "APs", "APM": "APm", "APL": "APl",
              "time_ms": "inference_ms"}
# Section 5.1 is prose in the paper: without the prior CE diverges; with it, 30.2 AP (Table 1a alpha .5).
PAPER_5_1 = pd.DataFrame({"prior_init": ["true", "false"], "AP": [30.2, float("nan")],
                          "outcome": ["trains (30.2 AP)", "diverges"]})
FIG_SIZE = (6.4, 4.0)  # inches at FIG_DPI: 640 x 400 px
FIG_DPI = 100


class ReportError(ValueError):
    """Bad input for the report (one line)."""


# ----------------------------------------------------------------------------------------------
# paper rows


def _norm(value: Any) -> str:
    """A key value as text, the same for the paper's csv and our configs: 0.10 -> "0.1", 128.0 -> "128"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    text = str(value).strip()
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def paper_table(table: str) -> pd.DataFrame:
    """The paper's rows of ``table``: key columns as normalized text, metrics as floats."""
    file, keys, metrics = PAPER[table]
    df = PAPER_5_1.copy() if file is None else pd.read_csv(PAPER_DIR / file, dtype=str, keep_default_na=False)
    for k in keys:
        df[k] = df[k].map(_norm)
    for m in metrics:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    return df


def _scaled(tags: Dict[str, str]) -> Dict[str, str]:
    """Tag ``scaled`` ("data.min_size 400->64, ...") -> {key: declared value}."""
    out = {}
    for part in (tags.get("scaled") or "").split(", "):
        m = re.match(r"^(\S+) (.+)->(.+)$", part.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def paper_key(table: str, cfg: Dict[str, Any], tags: Optional[Dict[str, str]] = None) -> Optional[Tuple[str, ...]]:
    """The paper row (its key column values) that a trial's flattened config stands for; None if none."""
    g = lambda k: cfg.get(k)  # noqa: E731
    if not cfg:
        return None
    if table == "1a":
        if g("loss.kind") != "focal" or float(g("loss.gamma") or 0) != 0:
            return None
        return (_norm(g("loss.alpha")),)
    if table == "1b":
        return None if g("loss.kind") != "focal" else (_norm(g("loss.gamma")), _norm(g("loss.alpha")))
    if table == "1c":
        ratios = g("anchors.aspect_ratios") or []
        return (_norm(g("anchors.scales_per_octave")), _norm(len(ratios)))
    if table == "1d":
        if g("loss.kind") == "focal":
            return ("FL", "", "")
        if g("loss.kind") != "ohem":
            return None
        method = "OHEM 1:3" if g("loss.ohem_pos_ratio") not in (None, "") else "OHEM"
        return (method, _norm(g("loss.ohem_batch_size")), _norm(g("loss.ohem_nms")))
    if table == "1e":
        scale = _scaled(tags or {}).get("data.min_size", g("data.min_size"))
        return (_norm(g("model.depth")), _norm(scale))
    if table == "5.1":
        return (_norm(bool(g("model.prior_init"))),)
    return None


# ----------------------------------------------------------------------------------------------
# our rows


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

    def stat(self, metric: str) -> Tuple[float, float]:
        values = [t["metrics"][metric] for t in self.done if metric in t["metrics"]]
        if not values:
            return float("nan"), float("nan")
        s = pd.Series(values, dtype=float)
        return float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else float("nan")


def _expected_configs(record) -> Dict[str, Dict[str, Any]]:
    """Flattened configs of the sweep's trials, from its sweep.yaml artifact (for trials without a run)."""
    if not record.sweep_yaml:
        return {}
    from retina.config import flatten

    from .sweep import load_sweep

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
                     "config": run.params, "tags": run.tags, "stale": False}
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
                 "stale": bool(record.manifest)}
        for name, label in run.tags.items():
            if name.startswith("row."):
                for one in label.split(" | "):
                    add(name[4:], one, dict(trial))
    out: Dict[str, List[OurRow]] = {}
    for row in sorted(rows.values(), key=lambda r: r.order):
        out.setdefault(row.table, []).append(row)
    return out


# ----------------------------------------------------------------------------------------------
# the table: paper rows beside ours


FIGURE4_IMAGES = 50  # validation images whose anchors Figure 4 analyses


def _fmt(x: float, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def build_table(table: str, rows: List[OurRow]) -> pd.DataFrame:
    """One line per (paper row, our row): paper rows in the paper's order (a paper row without a trial
    shows as "not in sweep"), then our rows that match no paper row. Columns: the paper's key columns,
    ``label``, ``status``, ``seeds``, per metric ``<m>`` (ours, mean over seeds), ``<m>_std``,
    ``<m>_paper``, ``<m>_diff``, ``run_ids``, ``primary`` (the row the verdicts use)."""
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


# ----------------------------------------------------------------------------------------------
# verdicts


@dataclass
class Verdict:
    claim: str
    holds: Optional[bool]  # None: cannot be checked (rows missing)
    detail: str

    def __post_init__(self) -> None:
        self.holds = None if self.holds is None else bool(self.holds)

    @property
    def mark(self) -> str:
        return {True: "holds", False: "does not hold", None: "not checked"}[self.holds]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (average ranks for ties)."""
    ra, rb = pd.Series(list(a), dtype=float).rank(), pd.Series(list(b), dtype=float).rank()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(ra.corr(rb))


def _done_primary(df: pd.DataFrame) -> pd.DataFrame:
    ok = df["primary"] & df["status"].map(lambda s: any(x in DONE for x in str(s).replace(",", " ").split()))
    return df[ok & df["AP"].notna()]


def _ap(df: pd.DataFrame, **where) -> Optional[float]:
    sel = _done_primary(df)
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel["AP"].iloc[0]) if len(sel) else None


def _status(df: pd.DataFrame, **where) -> Optional[str]:
    """The row's status without seed counts ("diverged x3" -> "diverged"; a mix stays a mix)."""
    sel = df[df["primary"]]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return re.sub(r" x\d+", "", str(sel["status"].iloc[0])) if len(sel) else None


def _cmp(claim: str, a: Optional[float], b: Optional[float], what_a: str, what_b: str) -> Verdict:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return Verdict(claim, None, f"{what_a if a is None else what_b} has no result")
    return Verdict(claim, a > b, f"{what_a} {a:.2f} vs {what_b} {b:.2f} AP")


def verdicts(table: str, df: pd.DataFrame, others: Optional[Dict[str, pd.DataFrame]] = None) -> List[Verdict]:
    """Rank agreement with the paper, whether the best row matches, and the paper's claim(s)."""
    out: List[Verdict] = []
    done = _done_primary(df)
    keys = PAPER[table][1]
    if table != "5.1":
        both = done[done["AP_paper"].notna()]
        if len(both) >= 3:
            rho = spearman(both["AP"], both["AP_paper"])
            out.append(Verdict("rank agreement with the paper (Spearman rho of AP over rows)",
                               None if math.isnan(rho) else rho >= 0.5, f"rho = {rho:.2f} over {len(both)} rows; agreement: rho >= 0.5"))
            ours_best = both.loc[both["AP"].idxmax()]
            paper_best = both.loc[both["AP_paper"].idxmax()]
            name = lambda r: r["label"] or " ".join(str(r[k]) for k in keys)  # noqa: E731
            out.append(Verdict("best row matches the paper's", ours_best.name == paper_best.name,
                               f"ours: {name(ours_best)} ({ours_best['AP']:.2f}); paper: {name(paper_best)} "
                               f"({paper_best['AP_paper']:.1f})"))
        else:
            out.append(Verdict("rank agreement with the paper (Spearman rho of AP over rows)", None,
                               f"{len(both)} rows with results; need 3"))
    if table == "1a":
        low, best = _ap(df, alpha="0.1"), done["AP"].max() if len(done) else None
        st = _status(df, alpha="0.1")
        if st == "diverged" or (low is not None and best is not None and low <= 0.1 * best):
            out.append(Verdict("alpha .10 collapses", True, f"alpha .10: {st}, {low if low is not None else 'no'} AP "
                               f"(best row {best:.2f})" if best is not None else f"alpha .10: {st}"))
        elif low is None:
            out.append(Verdict("alpha .10 collapses", None, "alpha .10 has no result"))
        else:
            out.append(Verdict("alpha .10 collapses", False, f"alpha .10: {low:.2f} AP, > 10% of the best row "
                               f"({best:.2f})"))
        mids = done[done["alpha"].isin(["0.75", "0.9"])]
        mid = float(mids["AP"].max()) if len(mids) else None
        out.append(_cmp("a mid alpha (.75 or .90) beats .50", mid, _ap(df, alpha="0.5"), "best of .75/.90",
                        "alpha .50"))
    elif table == "1b":
        ce = [float(x) for x in done[done["gamma"] == "0"]["AP"]]
        if others and "1a" in others:
            ce += [float(x) for x in _done_primary(others["1a"])["AP"]]
        out.append(_cmp("FL at gamma 2 beats the best CE", _ap(df, gamma="2", alpha="0.25"),
                        max(ce) if ce else None, "FL gamma 2 alpha .25", "best CE"))
    elif table == "1c":
        single = _ap(df, num_scales="1", num_aspect_ratios="1")
        rest = done[~((done["num_scales"] == "1") & (done["num_aspect_ratios"] == "1"))]
        v = _cmp("more scales or ratios beat a single square anchor", float(rest["AP"].max()) if len(rest) else None,
                 single, "best multi-anchor row", "1 scale x 1 ratio")
        if v.holds is not None:
            v.detail += f"; {int((rest['AP'] > single).sum())} of {len(rest)} rows beat it"
        out.append(v)
    elif table == "1d":
        ohem = done[done["method"].str.startswith("OHEM")]
        out.append(_cmp("FL beats every OHEM row", _ap(df, method="FL"),
                        float(ohem["AP"].max()) if len(ohem) else None, "FL", "best OHEM"))
    elif table == "1e":
        parts, holds = [], True
        for depth, g in done.groupby("depth"):
            if len(g) < 2:
                holds = None if holds else holds
                continue
            scale = g["scale"].astype(float)
            r_ap, r_ms = spearman(scale, g["AP"]), spearman(scale, g["time_ms"])
            parts.append(f"R{depth}: rho(scale, AP) {r_ap:.2f}, rho(scale, ms) {r_ms:.2f}")
            holds = holds and bool(r_ap > 0 and r_ms > 0)
        depths = sorted(done["depth"].unique(), key=float)
        if len(depths) >= 2:
            lo, hi = done[done["depth"] == depths[0]], done[done["depth"] == depths[-1]]
            common = sorted(set(lo["scale"]) & set(hi["scale"]))
            if common:
                m = lambda d, c: float(d[d["scale"].isin(common)][c].mean())  # noqa: E731
                deeper = m(hi, "AP") > m(lo, "AP") and m(hi, "time_ms") > m(lo, "time_ms")
                parts.append(f"R{depths[-1]} vs R{depths[0]} at common scales: AP {m(hi, 'AP'):.2f} vs "
                             f"{m(lo, 'AP'):.2f}, ms {m(hi, 'time_ms'):.1f} vs {m(lo, 'time_ms'):.1f}")
                holds = holds and deeper
        if not parts:
            holds = None
        out.append(Verdict("AP and time both grow with scale and depth", holds, "; ".join(parts) or "too few rows"))
    elif table == "5.1":
        without, with_ = _status(df, prior_init="false"), _status(df, prior_init="true")
        if without in (None, "missing", "not in sweep") or with_ in (None, "missing", "not in sweep"):
            out.append(Verdict("CE without the prior diverges, with it trains", None,
                               f"without: {without}; with: {with_}"))
        else:
            out.append(Verdict("CE without the prior diverges, with it trains",
                               without == "diverged" and with_ == "finished",
                               f"without: {without}; with: {with_} ({_fmt(_ap(df, prior_init='true') or float('nan'), 2)} AP)"))
    return out


# ----------------------------------------------------------------------------------------------
# writing


def _display(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """The table as shown (markdown / LaTeX): paper keys, row, status, ours +- std, paper, diff, run."""
    keys, metrics = PAPER[table][1], PAPER[table][2]
    out = pd.DataFrame({k: df[k] for k in keys})
    out["our row"] = df["label"]
    out["status"] = df["status"]
    for m in metrics:
        ours = df[m].map(_fmt)
        std = df[f"{m}_std"].map(lambda s: "" if math.isnan(s) else f" ± {s:.1f}")
        out[m] = ours + std.where(ours != "", "")
        out[f"{m} paper"] = df[f"{m}_paper"].map(_fmt)
        out[f"Δ{m}"] = df[f"{m}_diff"].map(lambda x: "" if math.isnan(x) else f"{x:+.1f}")
    if table == "5.1":
        out["paper"] = df["paper_outcome"]
    out["run"] = df["run_ids"].map(lambda s: " ".join(r[:8] for r in s.split()))
    return out


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _latex(df: pd.DataFrame, caption: str) -> str:
    tex = lambda v: str(v).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("±", r"$\pm$") \
        .replace("Δ", r"$\Delta$")  # noqa: E731
    cols = list(df.columns)
    body = [" & ".join(tex(c) for c in cols) + r" \\", r"\midrule"]
    body += [" & ".join(tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}",
                      r"\toprule", *body, r"\bottomrule", r"\end{tabular}", r"\caption{" + tex(caption) + "}",
                      r"\end{table}", ""])


def settings(record) -> Dict[str, Any]:
    """Profile, data, iterations, hardware and compute time of a sweep's runs."""
    def values(key: str, source: str = "params") -> str:
        vs = sorted({format_value(getattr(r, source).get(key)) for r in record.runs if key in getattr(r, source)})
        return ", ".join(vs) or "?"

    gpu_s = sum(r.metrics.get("train_time_s", 0.0) for r in record.runs if r.tags.get("device", "").startswith("cuda"))
    all_s = sum(r.metrics.get("train_time_s", 0.0) for r in record.runs)
    return {
        "profile": record.parent_tags.get("profile") or values("profile", "tags"),
        "data": f"{values('data.source')} (min_size {values('data.min_size')}, max_size {values('data.max_size')})",
        "model": f"ResNet-{values('model.depth')}",
        "iterations": values("train.iterations"),
        "batch_size": values("train.batch_size"),
        "hardware": f"{values('device', 'tags')} on {values('host', 'tags')}",
        "gpu_hours": round(gpu_s / 3600, 3),
        "train_hours": round(all_s / 3600, 3),
        "code_version": record.parent_tags.get("code_version", "?"),
        "overrides": record.parent_tags.get("overrides", ""),
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


def _figure4_source(rows: Dict[str, List["OurRow"]]) -> Optional[Tuple[str, str]]:
    """The finished FL gamma 2 trial whose checkpoint Figure 4 analyses (the paper uses its best FL model)."""
    for row in rows.get("1b", []):
        for trial in row.done:
            gamma = trial["config"].get("loss.gamma")
            if gamma is not None and float(gamma) == 2.0 and trial["tags"].get("checkpoint"):
                return row.label, trial["tags"]["checkpoint"]
    return None


def build_report(record) -> SweepReport:
    rows = our_rows(record)
    declared = [t for t in (record.parent_tags.get("table") or "").split(",") if t]
    order = [t for t in TABLES if t in set(declared) | set(rows)]
    tables = {t: build_table(t, rows.get(t, [])) for t in order if t in PAPER}
    found = {t: verdicts(t, df, tables) for t, df in tables.items()}
    return SweepReport(record.name, tables, found, settings(record), {}, [], _figure4_source(rows))


def write_report(report: SweepReport, directory: Path) -> None:
    from . import plots

    directory.mkdir(parents=True, exist_ok=True)
    report.plots = plots.write_plots(report.tables, directory)
    if "1b" in report.tables:
        report.plots[plots.LOSS_DISTRIBUTION] = _write_figure4(report, directory / plots.LOSS_DISTRIBUTION)
    s = report.settings
    md = [f"# {report.name}: our numbers beside the paper's", "",
          f"Profile **{s['profile']}**: {s['data']}, {s['model']}, {s['iterations']} iterations of batch "
          f"{s['batch_size']}, {s['hardware']}; {s['train_hours']} h of training ({s['gpu_hours']} GPU-hours). "
          "The paper: ResNet-50/101-FPN, 600 px COCO, 90k iterations of 16 images on 8 GPUs. Compare "
          "orderings and claims, not absolute AP.", ""]
    tex = []
    for t, df in report.tables.items():
        caption = TABLES[t]
        shown = _display(df, t)
        md += [f"## {caption}", "", _markdown(shown), "", "Verdicts:", ""]
        md += [f"- {v.claim}: **{v.mark}** ({v.detail})" for v in report.verdicts[t]]
        md.append("")
        tex.append(_latex(shown, f"{caption} (ours beside the paper's; profile {s['profile']})"))
    md += ["## Plots", ""] + [f"- [{f}]({f}): {what}" if what.endswith(".png") or not what.startswith("skipped")
                              else f"- {f}: {what}" for f, what in report.plots.items()] + [""]
    (directory / "table.md").write_text("\n".join(md))
    pd.concat(report.tables.values(), ignore_index=True).to_csv(directory / "table.csv", index=False)
    (directory / "table.tex").write_text("% requires \\usepackage{booktabs}\n" + "\n".join(tex))
    summary = {"sweep": report.name, "settings": s, "plots": report.plots,
               "verdicts": {t: [{"claim": v.claim, "holds": v.holds, "detail": v.detail} for v in vs]
                            for t, vs in report.verdicts.items()}}
    (directory / "summary.json").write_text(json.dumps(summary, indent=1))


def _write_figure4(report: SweepReport, path: Path) -> str:
    """Figure 4 from the FL gamma 2 trial's final checkpoint; returns what the plot shows or why it was skipped."""
    if report.figure4_source is None:
        return "skipped: no finished FL gamma 2 trial with a checkpoint"
    label, directory = report.figure4_source
    checkpoint = Path(directory) / "checkpoint.pt"
    if not checkpoint.is_file():
        return f"skipped: the checkpoint of {label} ({checkpoint}) is not reachable from this machine"
    from retina.analysis import collect_logits, loss_distribution  # torch loads only when there is a model to run

    from . import plots
    dist = loss_distribution(collect_logits(checkpoint, max_images=FIGURE4_IMAGES))
    plots.plot_loss_distribution(dist, path, label)
    neg, pos = dist["negatives"], dist["positives"]
    return (f"loss distribution (Figure 4) of {label} on {FIGURE4_IMAGES} validation images: the easiest 80% of "
            f"negatives carry {100 * float(neg[2.0][160]):.1f}% of their loss at gamma 2 vs "
            f"{100 * float(neg[0.0][160]):.1f}% at gamma 0; of positives {100 * float(pos[2.0][160]):.1f}% vs "
            f"{100 * float(pos[0.0][160]):.1f}%")


def write_index(out: Path) -> None:
    """``<out>/README.md``: every sweep reported under ``out`` (from their summary.json)."""
    lines = ["# Results", "",
             "Generated by `python -m orchestrator report` from the MLflow store; do not edit by hand. "
             "Each sweep's folder holds `table.md`, `table.csv`, `table.tex` and plots. The paper's own numbers "
             "are in `paper/`. Every run below is far smaller than the paper's (see each sweep's settings): "
             "what can be compared is the ordering of rows and the paper's claims, not absolute AP.", ""]
    for summary_file in sorted(out.glob("*/summary.json")):
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError:
            continue
        name, s = summary["sweep"], summary["settings"]
        lines += [f"## [{name}]({name}/table.md)", "",
                  f"- settings: profile {s['profile']}; data {s['data']}; {s['model']}; {s['iterations']} "
                  f"iterations, batch {s['batch_size']}; hardware {s['hardware']}; {s['train_hours']} h training, "
                  f"{s['gpu_hours']} GPU-hours; code {s['code_version']}"
                  + (f"; overrides `{s['overrides']}`" if s.get("overrides") else "")]
        for t, vs in summary["verdicts"].items():
            for v in vs:
                mark = {True: "holds", False: "does not hold", None: "not checked"}[v["holds"]]
                lines.append(f"- {t}: {v['claim']}: **{mark}** ({v['detail']})")
        for f, what in summary.get("plots", {}).items():
            lines.append(f"- plot [{f}]({name}/{f}): {what}" if not what.startswith("skipped")
                         else f"- plot {f}: {what}")
        lines.append("")
    (out / "README.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# the command


def _sweep_name(arg: str) -> str:
    if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
        from .sweep import load_sweep

        return load_sweep(arg).name
    return arg


def cmd_report(args: argparse.Namespace) -> int:
    from . import tracking
    from .__main__ import _fail

    tracking.ensure_quiet()
    uri = args.tracking_uri or tracking.default_tracking_uri()
    out = Path(args.out).resolve() if args.out else DEFAULT_OUT
    try:
        tracking.check_store(uri)
        if not tracking.store_exists(uri):
            raise tracking.TrackingError(f"tracking store {uri} does not exist (no sweep was run with it)")
        names = [_sweep_name(s) for s in args.sweep] or tracking.list_sweeps(uri)
        if not names:
            raise tracking.TrackingError(f"no sweeps recorded in {tracking.describe_store(uri)}")
        records = [tracking.read_sweep_record(uri, n) for n in names]  # every input checked before writing
    except (ConfigError, tracking.TrackingError) as e:
        return _fail(e)
    for record in records:
        report = build_report(record)
        directory = out / record.name
        write_report(report, directory)
        if record.parent_run_id and not args.no_log:
            tracking.log_report(uri, record.parent_run_id, directory)
        held = sum(v.holds is True for vs in report.verdicts.values() for v in vs)
        total = sum(v.holds is not None for vs in report.verdicts.values() for v in vs)
        print(f"{record.name}: {directory / 'table.md'} ({', '.join(report.tables)}; {held} of {total} checked "
              "claims hold)")
    write_index(out)
    print(f"index: {out / 'README.md'}")
    return 0
