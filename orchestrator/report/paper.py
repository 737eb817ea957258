"""The paper's Table 1 (a-e) and section 5.1 as reference rows, and which paper row a trial stands for.

The numbers are facts from the paper, shipped as CSV files in ``paper_tables/`` (package data).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent / "paper_tables"

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
              "time_ms": "inference_ms_batch1"}  # the paper timed one image at a time (rows.py falls back)
# Section 5.1 is prose in the paper: without the prior CE diverges; with it, 30.2 AP (Table 1a alpha .5).
PAPER_5_1 = pd.DataFrame({"prior_init": ["true", "false"], "AP": [30.2, float("nan")],
                          "outcome": ["trains (30.2 AP)", "diverges"]})


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
        scaled = _scaled(tags or {})  # a profile's stand-ins (128 px for 800, ResNet-34 for 101) read as the paper's
        return (_norm(scaled.get("model.depth", g("model.depth"))), _norm(scaled.get("data.min_size", g("data.min_size"))))
    if table == "5.1":
        return (_norm(bool(g("model.prior_init"))),)
    return None
