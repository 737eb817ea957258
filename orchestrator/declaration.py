"""What a sweep file declares about its results: its tables and its claims.

Pure: reads the sweep file's ``tables`` and ``claims`` sections (and a table's reference CSV), checks
them against the sweep's rows, and returns plain data that the report tests. Every mistake is a
one-line :class:`ConfigError` (exit 2 from the CLI).

Tables: the paper's (``1a`` .. ``1e``, ``5.1``: their reference is the paper's numbers, shipped with the
code) or any name of a user's own, optionally with a caption and a reference CSV (a ``label`` column
naming the sweep's rows, then one column per metric, e.g. ``AP``), resolved against the sweep file::

    tables:
      - 1c                                    # a paper table
      - {name: heads, caption: "Head depth", reference: heads_reference.csv}

Claims: a small vocabulary, each naming rows by their label (``<table>/<label>`` where a label is in
two tables). ``metric`` defaults to ``AP``; ``says`` is the claim's wording in the report::

    claims:
      - {kind: beats, a: "FL gamma=2", b: "CE alpha=0.9"}                  # A's mean beats B's
      - {kind: beats, a: "FL", b: {best_of: ["OHEM 128", "OHEM 256"]}}      # ... beats every member
      - {kind: beats, a: {best_of: ["CE .75", "CE .9"]}, b: "CE .5"}       # the best member beats B
      - {kind: rank_agreement, table: 1a, reference: AP}                    # Spearman with a reference column
      - {kind: collapses, row: "CE alpha=0.1", below: 1.0}                  # mean AP below a threshold
      - {kind: learns, row: "FL", above: 1.0}                               # mean AP above a threshold
      - {kind: diverges_vs_trains, diverges: "no prior", trains: "prior", floor: 1.0}

How each kind is tested is ``orchestrator/report/claims.py``'s docstring.
"""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from retina.config import ConfigError, closest_key

# The paper's tables and sections (their reference numbers ship in orchestrator/report/paper_tables/).
PAPER_TABLES: Dict[str, str] = {
    "1a": "Table 1a: varying alpha for CE loss (gamma 0)",
    "1b": "Table 1b: varying gamma for FL (with its best alpha)",
    "1c": "Table 1c: scales per octave x aspect ratios",
    "1d": "Table 1d: FL vs OHEM baselines",
    "1e": "Table 1e: speed/accuracy trade-off (depth x image scale)",
    "5.1": "Section 5.1: CE with and without the prior initialization",
}
# the reference columns of the paper's tables (as in paper_tables/*.csv)
PAPER_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "1a": ("AP", "AP50", "AP75"), "1b": ("AP", "AP50", "AP75"), "1c": ("AP", "AP50", "AP75"),
    "1d": ("AP", "AP50", "AP75"), "1e": ("AP", "AP50", "AP75", "APS", "APM", "APL", "time_ms"), "5.1": ("AP",),
}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "inference_ms", "inference_ms_batch1")
# a paper column -> our metric
PAPER_METRIC = {"APS": "APs", "APM": "APm", "APL": "APl", "time_ms": "inference_ms_batch1"}

TABLE_KEYS = ("name", "caption", "reference")
CLAIM_KINDS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {  # kind -> (required, optional) keys
    "beats": (("a", "b"), ("table", "metric", "says")),
    "rank_agreement": (("table", "reference"), ("metric", "says")),
    "collapses": (("row", "below"), ("table", "metric", "says")),
    "learns": (("row", "above"), ("table", "metric", "says")),
    "diverges_vs_trains": (("diverges", "trains", "floor"), ("table", "says")),
}


@dataclass
class TableSpec:
    name: str
    caption: str
    paper: bool  # a paper table: keyed by the paper's columns, its reference the paper's numbers
    reference: Optional[Dict[str, Dict[str, float]]] = None  # a user's table: label -> column -> value
    reference_file: str = ""


@dataclass
class Side:
    """One side of "A beats B": a row, or the best of a group of rows."""
    rows: List[Tuple[str, str]]  # (table, label)
    best_of: bool = False

    def describe(self) -> str:
        names = [label for _, label in self.rows]
        return f"the best of {', '.join(names)}" if self.best_of else names[0]


@dataclass
class Claim:
    kind: str
    says: str  # the claim's wording in the report
    table: str  # the table whose section shows it
    metric: str = "AP"
    a: Optional[Side] = None  # beats
    b: Optional[Side] = None
    row: Optional[Tuple[str, str]] = None  # collapses / learns
    threshold: Optional[float] = None  # collapses: below; learns: above; diverges_vs_trains: floor
    diverges: Optional[Tuple[str, str]] = None
    trains: Optional[Tuple[str, str]] = None
    reference: str = ""  # rank_agreement: the reference column

    @property
    def rows(self) -> List[Tuple[str, str]]:
        """Every row the claim rests on."""
        out = [r for side in (self.a, self.b) if side for r in side.rows]
        out += [r for r in (self.row, self.diverges, self.trains) if r]
        return out


@dataclass
class Declaration:
    tables: Dict[str, TableSpec]
    claims: List[Claim] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def table_specs(value: Any, where: str, base_dir: Optional[Path], read_references: bool = True) -> Dict[str, TableSpec]:
    """The ``tables`` section: paper ids or ``{name, caption, reference}`` of a user's table."""
    if value is None:
        raise ConfigError(f"{where}: missing 'tables'; expected a list of table names such as [1a, 1b] or [mine]")
    if isinstance(value, (str, int, float)) or isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: tables should be a non-empty list of table names such as [1a, 1b]")
    out: Dict[str, TableSpec] = {}
    for i, entry in enumerate(value):
        at = f"{where}: tables[{i}]"
        spec = dict(entry) if isinstance(entry, Mapping) else {"name": entry}
        for k in spec:
            if k not in TABLE_KEYS:
                hint = closest_key(str(k), TABLE_KEYS)
                raise ConfigError(f"{at}: unknown key '{k}'; " + (f"did you mean '{hint}'?" if hint else
                                                                  f"expected {', '.join(TABLE_KEYS)}"))
        name = spec.get("name")
        if isinstance(name, float):
            name = f"{name:g}"
        name = str(name).strip() if name is not None else ""
        if not name or any(c in name for c in "/|,") or name != name.strip():
            raise ConfigError(f"{at}: name={spec.get('name')!r}; expected a table name without '/', '|' or ','")
        if name in out:
            raise ConfigError(f"{at}: table '{name}' is listed twice")
        paper = name in PAPER_TABLES
        caption = spec.get("caption") or (PAPER_TABLES[name] if paper else name)
        if not isinstance(caption, str):
            raise ConfigError(f"{at}: caption should be text")
        table = TableSpec(name, caption, paper)
        if spec.get("reference") is not None:
            if paper:
                raise ConfigError(f"{at}: table {name} is the paper's; its reference is the paper's numbers "
                                  "(leave out 'reference', or give the table a name of your own)")
            table.reference_file = str(spec["reference"])
            if read_references:
                table.reference = read_reference(spec["reference"], base_dir, at)
        out[name] = table
    return out


def read_reference(value: Any, base_dir: Optional[Path], where: str) -> Dict[str, Dict[str, float]]:
    """A reference CSV: a ``label`` column, then numeric columns (empty cells: no value)."""
    path = Path(str(value))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"{where}: reference={value!r}: {path} not found; expected a CSV file (relative to the "
                          "sweep file) with a 'label' column and metric columns such as AP")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "label" not in columns or len(columns) < 2:
            raise ConfigError(f"{path}: columns {columns}; expected a 'label' column and at least one metric column")
        out: Dict[str, Dict[str, float]] = {}
        for line_no, line in enumerate(reader, start=2):
            values = {}
            for column in columns:
                if column == "label" or (line.get(column) or "").strip() == "":
                    continue
                try:
                    values[column] = float(line[column])
                except ValueError:
                    raise ConfigError(f"{path}: line {line_no}, column {column}: {line[column]!r} is not a "
                                      "number") from None
            out[line["label"]] = values
    return out


def claims(value: Any, where: str, tables: Mapping[str, TableSpec], rows: Sequence[Tuple[str, str]]) -> List[Claim]:
    """The ``claims`` section, every row it names checked against the sweep's (table, label) rows."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: claims should be a list of {{kind: ..., ...}}; see orchestrator/declaration.py")
    known = list(dict.fromkeys(rows))
    return [_claim(entry, f"{where}: claims[{i}]", tables, known) for i, entry in enumerate(value)]


def _claim(entry: Any, at: str, tables: Mapping[str, TableSpec], rows: List[Tuple[str, str]]) -> Claim:
    if not isinstance(entry, Mapping) or "kind" not in entry:
        raise ConfigError(f"{at}: expected a mapping with 'kind' (one of {', '.join(CLAIM_KINDS)})")
    kind = str(entry["kind"])
    if kind not in CLAIM_KINDS:
        hint = closest_key(kind, list(CLAIM_KINDS))
        raise ConfigError(f"{at}: unknown claim kind '{kind}'; " + (f"did you mean '{hint}'?" if hint else
                                                                    f"expected one of {', '.join(CLAIM_KINDS)}"))
    required, optional = CLAIM_KINDS[kind]
    for k in entry:
        if k != "kind" and k not in required and k not in optional:
            allowed = (*required, *optional)
            hint = closest_key(str(k), allowed)
            raise ConfigError(f"{at}: unknown key '{k}' for a {kind} claim; " +
                              (f"did you mean '{hint}'?" if hint else f"expected {', '.join(allowed)}"))
    for k in required:
        if entry.get(k) is None:
            raise ConfigError(f"{at}: a {kind} claim needs '{k}' (it takes {', '.join(required)})")
    at = f"{at} ({kind})"
    metric = str(entry.get("metric", "AP"))
    if metric not in METRICS and kind != "rank_agreement":
        raise ConfigError(f"{at}: metric={metric!r}; expected one of {', '.join(METRICS)}")
    claim = Claim(kind=kind, says="", table="", metric=metric)
    if kind == "beats":
        claim.a, claim.b = _side(entry["a"], f"{at}.a", rows), _side(entry["b"], f"{at}.b", rows)
        if claim.a.best_of and claim.b.best_of:
            raise ConfigError(f"{at}: 'best_of' on both sides; expected a row on at least one side")
        says = f"{claim.a.describe()} beats {claim.b.describe()}"
    elif kind == "rank_agreement":
        table = str(entry["table"])
        if table not in tables:
            raise ConfigError(f"{at}: table '{table}' is not one of the sweep's tables ({', '.join(tables)})")
        spec, reference = tables[table], str(entry["reference"])
        columns = PAPER_COLUMNS[table] if spec.paper else \
            tuple(dict.fromkeys(c for values in (spec.reference or {}).values() for c in values))
        if not spec.paper and not spec.reference_file:
            raise ConfigError(f"{at}: table '{table}' has no reference; give it one (tables: - {{name: {table}, "
                              "reference: FILE.csv}}) or drop the claim")
        if spec.reference is not None and reference not in columns:
            raise ConfigError(f"{at}: reference={reference!r} is not a column of table {table}'s reference; "
                              f"expected one of {', '.join(columns)}")
        claim.table, claim.reference = table, reference
        claim.metric = str(entry.get("metric") or PAPER_METRIC.get(reference, reference))
        if claim.metric not in METRICS:
            raise ConfigError(f"{at}: metric={claim.metric!r}; expected one of {', '.join(METRICS)}")
        says = f"rank agreement of our {claim.metric} with the reference {reference} over the rows of {table}"
    elif kind in ("collapses", "learns"):
        claim.row = _row(entry["row"], f"{at}.row", rows)
        key = "below" if kind == "collapses" else "above"
        claim.threshold = _number(entry[key], f"{at}.{key}")
        says = f"{claim.row[1]} {'collapses' if kind == 'collapses' else 'learns'}: mean {metric} {key} " \
               f"{claim.threshold:g}"
    else:
        claim.diverges = _row(entry["diverges"], f"{at}.diverges", rows)
        claim.trains = _row(entry["trains"], f"{at}.trains", rows)
        claim.threshold = _number(entry["floor"], f"{at}.floor")
        claim.metric = "AP"
        says = f"{claim.diverges[1]} diverges more often than {claim.trains[1]}, which learns (AP above " \
               f"{claim.threshold:g})"
    table = entry.get("table")
    if table is not None and str(table) not in tables:
        raise ConfigError(f"{at}: table '{table}' is not one of the sweep's tables ({', '.join(tables)})")
    claim.table = claim.table or (str(table) if table is not None else claim.rows[0][0])
    says_given = entry.get("says")
    if says_given is not None and not isinstance(says_given, str):
        raise ConfigError(f"{at}: says should be text (the claim's wording in the report)")
    claim.says = says_given or says
    return claim


def _number(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{at}={value!r}; expected a number (AP points)")
    return float(value)


def _side(value: Any, at: str, rows: List[Tuple[str, str]]) -> Side:
    if isinstance(value, Mapping):
        if list(value) != ["best_of"] or not isinstance(value["best_of"], list) or len(value["best_of"]) < 1:
            raise ConfigError(f"{at}: expected a row label or {{best_of: [row labels]}}")
        group = [_row(v, f"{at}.best_of[{i}]", rows) for i, v in enumerate(value["best_of"])]
        if len(set(group)) != len(group):
            raise ConfigError(f"{at}.best_of names a row twice")
        return Side(group, best_of=len(group) > 1)
    return Side([_row(value, at, rows)])


def _row(value: Any, at: str, rows: List[Tuple[str, str]]) -> Tuple[str, str]:
    """A row by its label, or ``<table>/<label>``; it must be one of the sweep's rows."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{at}={value!r}; expected a row label of the sweep (or '<table>/<label>')")
    matches = [r for r in rows if r[1] == value]
    if not matches and "/" in value:
        table, label = value.split("/", 1)
        matches = [r for r in rows if r == (table, label)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"{at}: row '{value}' is in tables {', '.join(t for t, _ in matches)}; name it as "
                          f"'<table>/{value}'")
    labels = [label for _, label in rows]
    hint = closest_key(value, labels)
    raise ConfigError(f"{at}: the sweep has no row '{value}'; " + (f"did you mean '{hint}'?" if hint else
                                                                  f"its rows: {', '.join(labels[:8])}"))


def from_dict(data: Mapping[str, Any]) -> Declaration:
    """A :class:`Declaration` back from :meth:`Declaration.as_dict` (what the parent run logs)."""
    tables = {name: TableSpec(**spec) for name, spec in data.get("tables", {}).items()}
    out = []
    for c in data.get("claims", []):
        c = dict(c)
        for k in ("a", "b"):
            if c.get(k):
                c[k] = Side([tuple(r) for r in c[k]["rows"]], c[k]["best_of"])
        for k in ("row", "diverges", "trains"):
            if c.get(k):
                c[k] = tuple(c[k])
        out.append(Claim(**c))
    return Declaration(tables, out)
