"""A sweep file's rows: its ``rows`` and ``grid`` entries (and their seeds) read into labelled rows of
nested config overrides, every mistake a one-line ConfigError naming the entry (pure; sweep.py turns
the rows into trials)."""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from retina import config as config_lib
from retina.config import ConfigError

ROW_KEYS = ("table", "label", "set", "seeds")
GRID_KEYS = ("table", "label", "axes", "set", "seeds")
_LABEL_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?::([^{}]*))?\}")


def nest(d: Mapping[str, Any]) -> dict:
    """``{"loss.alpha": 1, "train": {"lr": 2}}`` -> ``{"loss": {"alpha": 1}, "train": {"lr": 2}}``."""
    out: dict = {}
    for key, value in d.items():
        node = out
        parts = str(key).split(".")
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                child = node[p] = {}
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping):
            existing = node.get(leaf)
            merged = nest(value)
            node[leaf] = deep_merge(existing, merged) if isinstance(existing, dict) else merged
        else:
            node[leaf] = value
    return out


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def format_value(value: Any) -> str:
    """Short, stable text for a config value: 0.1 -> "0.1", 2.0 -> "2", [0.5, 1.0] -> "[0.5,1]"."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)

def is_mapping(x: Any) -> bool:
    return isinstance(x, Mapping)

@dataclass
class Row:
    table: str
    label: str
    values: dict  # nested overrides: set + axis values used
    where: str  # "file: grid[0] ('CE alpha=0.1')"
    scaled: Dict[str, Tuple[Any, Any]]
    seeds: Optional[List[int]] = None  # the row's own seeds (None: the file's)

def parse_seeds(value: Any, where: str) -> List[int]:
    if value is None:
        return [0]  # train.seed and data.synthetic.seed as configured
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ConfigError(f"{where}: seeds={value!r}; expected a non-empty list of integers >= 0")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: seeds={value!r} repeats a seed; expected distinct seeds")
    return list(value)


def row_seeds(entry: Mapping, where: str) -> Optional[List[int]]:
    """A row's (or grid entry's) own ``seeds``; None: the file's."""
    return None if entry.get("seeds") is None else parse_seeds(entry.get("seeds"), where)

def check_keys(entry: Mapping, allowed: Sequence[str], where: str) -> None:
    for k in entry:
        if k not in allowed:
            hint = config_lib.closest_key(str(k), allowed)
            right = f"did you mean '{hint}'?" if hint else f"expected {', '.join(allowed)}"
            raise ConfigError(f"{where}: unknown key '{k}'; {right}")


def _row_table(entry: Mapping, tables: List[str], where: str) -> str:
    table = entry.get("table")
    if table is None:
        if len(tables) == 1:
            return tables[0]
        raise ConfigError(f"{where}: missing 'table'; expected one of the sweep's tables {', '.join(tables)}")
    table = f"{table:g}" if isinstance(table, float) else str(table)
    if table not in tables:
        raise ConfigError(f"{where}: table '{table}' is not in the sweep's tables [{', '.join(tables)}]; "
                          "add it there or fix the row")
    return table


def _set(entry: Mapping, where: str) -> dict:
    value = entry.get("set") or {}
    if not is_mapping(value):
        raise ConfigError(f"{where}: 'set' should be a mapping of config keys to values")
    return nest(value)


def file_rows(data: Mapping, tables: List[str], profile_axes: Any, profile: str, where: str) -> List[Row]:
    """Every row of the file, in file order (``rows`` and ``grid`` as they appear)."""
    explicit, grids = data.get("rows"), data.get("grid")
    if explicit is None and grids is None:
        raise ConfigError(f"{where}: no rows; expected 'rows' (a list) and/or 'grid' (a list)")
    if explicit is not None and not isinstance(explicit, list):
        raise ConfigError(f"{where}: rows should be a list of {{table, label, set}}")
    if grids is not None and not isinstance(grids, list):
        raise ConfigError(f"{where}: grid should be a list of {{table, label, axes, set}}")
    if not is_mapping(profile_axes):
        raise ConfigError(f"{where}: profiles.{profile}.axes should map axis keys to lists of values")
    rows: List[Row] = []
    used_profile_axes: set = set()
    for section in [k for k in data if k in ("rows", "grid")]:
        if section == "rows":
            rows += _explicit_rows(explicit or [], tables, where)
        else:
            rows += _grid_rows(grids or [], tables, profile_axes, profile, where, used_profile_axes)
    for key in profile_axes:
        if key not in used_profile_axes:
            raise ConfigError(f"{where}: profiles.{profile}.axes.{key} is not an axis of any grid")
    if not rows:
        raise ConfigError(f"{where}: no rows; 'rows' and 'grid' are empty")
    return rows


def _explicit_rows(entries: list, tables: List[str], where: str) -> List[Row]:
    rows = []
    for i, entry in enumerate(entries):
        at = f"{where}: rows[{i}]"
        if not is_mapping(entry):
            raise ConfigError(f"{at} should be a mapping with keys {', '.join(ROW_KEYS)}")
        check_keys(entry, ROW_KEYS, at)
        label = entry.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{at}: missing 'label'; expected the row's name in the report, e.g. \"CE alpha=0.5\"")
        table = _row_table(entry, tables, at)
        rows.append(Row(table, label, _set(entry, at), f"{at} ({table} '{label}')", {},
                         row_seeds(entry, at)))
    return rows


def grid_axes(entry: Any, at: str) -> Dict[str, list]:
    if not is_mapping(entry):
        raise ConfigError(f"{at} should be a mapping with keys {', '.join(GRID_KEYS)}")
    check_keys(entry, GRID_KEYS, at)
    axes = entry.get("axes")
    if not is_mapping(axes) or not axes:
        raise ConfigError(f"{at}: empty grid; expected 'axes' mapping config keys to non-empty lists of values")
    known = set(config_lib.valid_keys())
    for key, values in axes.items():
        key = str(key)
        if key not in known:
            hint = config_lib.closest_key(key, known)
            raise ConfigError(f"{at}.axes: unknown key '{key}'; " + (f"did you mean '{hint}'?" if hint else
                                                                     "see retina/config/schema.py for the valid keys"))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{at}: empty grid; axes.{key} should be a non-empty list of values")
    return {str(k): list(v) for k, v in axes.items()}


def _grid_rows(grids: list, tables: List[str], profile_axes: Mapping, profile: str, where: str,
               used_profile_axes: set) -> List[Row]:
    rows = []
    for i, entry in enumerate(grids):
        at = f"{where}: grid[{i}]"
        axes = grid_axes(entry, at)
        table = _row_table(entry, tables, at)
        label_format = entry.get("label")
        if not isinstance(label_format, str) or not label_format.strip():
            raise ConfigError(f"{at}: missing 'label'; expected a format such as \"CE alpha={{loss.alpha}}\"")
        row_set = _set(entry, at)
        set_flat = config_lib.flatten_dict(row_set)
        keys = list(axes)
        for field_name, _spec in _LABEL_FIELD_RE.findall(label_format):
            if field_name not in keys and field_name not in set_flat:
                raise ConfigError(f"{at}: label '{label_format}' uses {{{field_name}}}, which is neither one of "
                                  f"its axes ({', '.join(keys)}) nor in its 'set'")
        used_values = {}
        for key in keys:
            used = axes[key]
            if key in profile_axes:
                used_profile_axes.add(key)
                used = profile_axes[key]
                if not isinstance(used, list) or len(used) != len(axes[key]):
                    raise ConfigError(f"{where}: profiles.{profile}.axes.{key} should list {len(axes[key])} values, "
                                      f"one per value of grid[{i}].axes.{key}")
            used_values[key] = used
        for combo in itertools.product(*(range(len(axes[k])) for k in keys)):
            declared = {k: axes[k][j] for k, j in zip(keys, combo)}
            used = {k: used_values[k][j] for k, j in zip(keys, combo)}
            label = format_label(label_format, {**set_flat, **declared}, at)
            scaled = {k: (declared[k], used[k]) for k in keys if used[k] != declared[k]}
            values = deep_merge(row_set, nest(used))
            rows.append(Row(table, label, values, f"{at} ({table} '{label}')", scaled, row_seeds(entry, at)))
    return rows

def format_label(fmt: str, values: Mapping[str, Any], where: str) -> str:
    def sub(m: re.Match) -> str:
        value = values[m.group(1)]
        spec = m.group(2)
        if spec:
            try:
                return format(value, spec)
            except (ValueError, TypeError):
                raise ConfigError(f"{where}: label format '{{{m.group(1)}:{spec}}}' does not fit "
                                  f"the value {value!r}") from None
        return format_value(value)
    return _LABEL_FIELD_RE.sub(sub, fmt)
