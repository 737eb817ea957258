"""Sweep files: load, validate and expand ``sweeps/<ablation>.yaml`` into trials.

Pure: no Ray, no MLflow, nothing written. A sweep file names the paper table(s) it reproduces, a
base profile, overrides, and its rows::

    name: alpha_gamma            # experiment name in MLflow (default: the file name)
    tables: [1a, 1b]             # paper tables (see TABLES) or tables of its own (declaration.py)
    profile: cpu                 # default profile; --profile overrides it
    base: {loss.kind: focal}     # retina config overrides for every row (nested or dotted keys)
    seeds: [0, 1, 2]             # each row runs once per seed (see below); default [0]
    rows:                        # explicit rows; a row may give its own seeds
      - {table: 1b, label: "FL gamma=0.1 alpha=0.75", set: {loss.gamma: 0.1, loss.alpha: 0.75}, seeds: [0, 1, 2]}
    grid:                        # cartesian rows: one per combination of the axes' values
      - table: 1a
        label: "CE alpha={loss.alpha}"     # {dotted.key} or {dotted.key:.2f}: the row's value
        axes: {loss.alpha: [0.10, 0.25]}
        set: {loss.gamma: 0}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0.5, max_concurrent: 4}   # optional
    claims:                      # optional: what the report tests (declaration.py)
      - {kind: beats, a: "FL gamma=0.1 alpha=0.75", b: "CE alpha=0.1"}
    profiles:                    # optional, per profile: how the sweep scales to that machine
      cpu:
        base: {data.max_size: 128}
        axes: {data.min_size: [64, 80, 96, 112, 128]}   # replaces a grid axis's values, position by position
        resources: {...}

A row's resolved config is schema <- profile <- ``base`` <- ``profiles.<p>.base`` <- the row's
``set`` and axis values <- command-line ``--set``, then its seed; it is validated with retina's own
checks. A seed is a full draw of everything random: seed ``k`` of a row adds ``k`` to its
``train.seed`` (initialization, data order, flips), its ``data.synthetic.seed`` (the synthetic dataset
itself) and its ``pretrain.seed`` (the pre-trained backbone: each seed fine-tunes a backbone of its own,
so the backbone's variance is part of the noise the verdicts weigh). ``--set train.seed=N
data.synthetic.seed=N pretrain.seed=N`` moves the whole sweep to other draws.
Seeds are the row's ``seeds`` (a row or grid entry may give its own: the decisive rows of a table can
run three while the others run one), else the file's, else ``[0]``. Labels always show the values the file's ``axes`` declare (the paper's),
so a row keeps its paper name under every profile; a per-profile substitution is recorded in
:attr:`Trial.scaled` (and so in MLflow and the dry-run listing).

A trial's key is a hash of its resolved config (which holds the seed) minus the keys that cannot
change its results (trial_keys.py). The rows and grids are read by sweep_rows.py, the dry-run listing
is listing.py, the tables and claims declaration.py. Rows that resolve to the same config are one trial that
belongs to several (table, label) rows: Table 1a's CE alpha .75 is Table 1b's gamma 0 alpha .75.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from retina import config as config_lib
from retina.config import ConfigError

from . import declaration as declaration_lib
from .declaration import PAPER_TABLES, Declaration
from .sweep_rows import check_keys, file_rows, format_value, grid_axes, is_mapping, nest, parse_seeds  # noqa: F401
from .trial_keys import KEY_EXCLUDED, KEY_LENGTH, KEY_OMITTED_AT, key_excluded, trial_key  # noqa: F401

# The paper's tables and sections; a sweep may also declare tables of its own (declaration.py).
TABLES: Dict[str, str] = PAPER_TABLES

TOP_LEVEL_KEYS = ("name", "description", "tables", "profile", "base", "seeds", "rows", "grid", "resources",
                  "profiles", "claims")
PROFILE_SECTION_KEYS = ("base", "axes", "resources")
RESOURCE_KEYS = ("cpus_per_trial", "gpus_per_trial", "max_concurrent")
DEFAULT_VARIANT = "default"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------------------------------
# what a sweep expands to


@dataclass(frozen=True)
class Membership:
    """One row of a paper table that a trial stands for."""
    table: str
    label: str
    seed: int


@dataclass
class Trial:
    key: str  # stable hash of the resolved config (see trial_key)
    config: DictConfig  # resolved and validated
    memberships: List[Membership] = field(default_factory=list)
    diff: Dict[str, Any] = field(default_factory=dict)  # settings that differ from the sweep's base config
    scaled: Dict[str, Tuple[Any, Any]] = field(default_factory=dict)  # key -> (declared value, value used)

    @property
    def seed(self) -> int:
        return int(self.config.train.seed)

    @property
    def tables(self) -> List[str]:
        return sorted({m.table for m in self.memberships}, key=_table_order)

    @property
    def label(self) -> str:
        """All the row labels of this trial, " | "-joined (most trials have one)."""
        return " | ".join(dict.fromkeys(m.label for m in self.memberships))

    def container(self) -> dict:
        return OmegaConf.to_container(self.config, resolve=True)


@dataclass
class Resources:
    """Per-trial resources as the sweep file asks for them; None: let the runner decide."""
    cpus_per_trial: Optional[float] = None
    gpus_per_trial: Optional[float] = None
    max_concurrent: Optional[int] = None


@dataclass
class Sweep:
    name: str
    path: Path
    description: str
    tables: List[str]
    profile: str
    overrides: List[str]  # command-line key=value
    base_config: DictConfig  # schema <- profile <- base <- profiles.<p>.base <- command line (no row)
    trials: List[Trial]
    resources: Resources
    num_rows: int  # (table, label, seed) rows; >= len(trials)
    declaration: Declaration = field(default_factory=lambda: Declaration({}))  # tables and claims
    variant: str = DEFAULT_VARIANT  # "default": the file as it is; else its profile and --set (own parent run)

    def seeds_of(self, table: str, label: str) -> List[int]:
        """The seeds (train.seed values) a row runs."""
        return sorted(m.seed for t in self.trials for m in t.memberships if (m.table, m.label) == (table, label))

    def trial(self, key: str) -> Trial:
        for t in self.trials:
            if t.key == key:
                return t
        raise KeyError(key)


# ----------------------------------------------------------------------------------------------
# keys and small helpers


def _table_order(table: str) -> Tuple[float, str]:
    ids = list(TABLES)
    return (ids.index(table) if table in ids else len(ids), table)


# ----------------------------------------------------------------------------------------------
# loading


SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"  # the shipped sweep files (package data)


def find_sweep(arg: str | Path) -> Path:
    """The sweep file ``arg`` names: the file itself if it exists, else the shipped sweep of that name
    (``sweeps/alpha_gamma.yaml``, ``alpha_gamma.yaml`` and ``alpha_gamma`` all name
    ``orchestrator/sweeps/alpha_gamma.yaml``), so the shipped sweeps run from any folder."""
    path = Path(arg)
    if path.is_file():
        return path
    shipped = SWEEPS_DIR / f"{path.name[:-5] if path.name.endswith('.yaml') else path.name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(p.stem for p in sweep_files(SWEEPS_DIR))
    raise ConfigError(f"{arg}: file not found, and no shipped sweep has that name; expected a sweep file or one of "
                      f"{names}")


def load_sweep(path: str | Path, profile: Optional[str] = None, overrides: Sequence[str] = (),
               check_paths: bool = False, read_references: bool = True) -> Sweep:
    """Read, validate and expand a sweep file; every mistake is a one-line :class:`ConfigError`.

    Args:
        path: the sweep YAML, or the name of a shipped sweep (:func:`find_sweep`).
        profile: overrides the file's ``profile`` (e.g. ``--profile gpu``).
        overrides: command-line ``key=value`` settings merged over every row.
        check_paths: also require that configured dataset files exist (COCO sources).
        read_references: read a user's table's reference CSV (False: the report re-reading a logged
            sweep file, whose references come logged with it).
    """
    path = find_sweep(path)
    where = str(path)
    data = config_lib.read_yaml(path)
    if not data:
        raise ConfigError(f"{where}: empty sweep file; expected at least 'tables' and 'rows' or 'grid'")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            hint = config_lib.closest_key(str(key), TOP_LEVEL_KEYS)
            right = f"did you mean '{hint}'?" if hint else f"expected one of {', '.join(TOP_LEVEL_KEYS)}"
            raise ConfigError(f"{where}: unknown top-level key '{key}'; {right}")

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name={name!r} is not a valid sweep name; expected letters, digits, '_', '-', '.'")
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description should be text")

    table_specs = declaration_lib.table_specs(data.get("tables"), where, path.parent, read_references)
    tables = list(table_specs)
    file_profile = data.get("profile") or config_lib.DEFAULT_PROFILE
    profile = profile or file_profile
    if not isinstance(profile, str):
        raise ConfigError(f"{where}: profile={profile!r}; expected a profile name such as 'cpu'")
    profile_file = config_lib.profile_path(profile)  # unknown profile: one-line error listing the known

    sections = data.get("profiles") or {}
    if not is_mapping(sections):
        raise ConfigError(f"{where}: 'profiles' should map profile names to {{base, axes, resources}}")
    _check_profile_sections(data, sections, where)
    section = sections.get(profile) or {}

    # base config: schema <- profile <- base <- profiles.<p>.base <- command line
    base = data.get("base") or {}
    if not is_mapping(base):
        raise ConfigError(f"{where}: base should be a mapping of config keys")
    profile_base = section.get("base") or {}
    if not is_mapping(profile_base):
        raise ConfigError(f"{where}: profiles.{profile}.base should be a mapping of config keys")
    head_sources = [(str(profile_file), config_lib.read_yaml(profile_file)), (f"{where}: base", nest(base)),
                    (f"{where}: profiles.{profile}.base", nest(profile_base))]
    cfg = config_lib.schema()
    for source, values in head_sources:
        cfg = config_lib.merge_into(cfg, values, source)
    head = cfg  # everything that comes before a row
    _validate(head, head_sources, f"{where}: base")
    cli = config_lib.parse_dotlist(overrides, "command line") if overrides else {}
    cli_sources = [("command line", cli)] if cli else []
    base_config = config_lib.merge_into(cfg, cli, "command line") if cli else cfg
    _validate(base_config, head_sources + cli_sources, "command line")

    seeds = parse_seeds(data.get("seeds"), where)
    rows = file_rows(data, tables, section.get("axes") or {}, profile, where)

    trials: Dict[str, Trial] = {}
    seen: Dict[Tuple[str, str, int], str] = {}
    base_flat = config_lib.flatten(base_config)
    for row in rows:
        row_sources = [(row.where, row.values)]
        row_base = head
        for source, values in row_sources + cli_sources:
            row_base = config_lib.merge_into(row_base, values, source)
        for seed in row.seeds if row.seeds is not None else seeds:
            # seed k: train.seed, data.synthetic.seed and pretrain.seed of the row plus k (a full draw)
            row_cfg = row_base if seed == 0 else config_lib.merge_into(row_base, {
                "train": {"seed": int(row_base.train.seed) + seed},
                "data": {"synthetic": {"seed": int(row_base.data.synthetic.seed) + seed}},
                "pretrain": {"seed": int(row_base.pretrain.seed) + seed}}, f"{row.where}: seed {seed}")
            _validate(row_cfg, head_sources + row_sources + cli_sources, row.where, check_paths)
            seed_used = int(row_cfg.train.seed)
            ident = (row.table, row.label, seed_used)
            if ident in seen:
                raise ConfigError(f"{row.where}: duplicate label '{row.label}' in table {row.table} "
                                  f"(also {seen[ident]}); expected one label per row")
            seen[ident] = row.where
            key = trial_key(row_cfg)
            trial = trials.get(key)
            if trial is None:
                flat = config_lib.flatten(row_cfg)
                diff = {k: v for k, v in flat.items() if base_flat.get(k) != v}
                trial = trials[key] = Trial(key=key, config=row_cfg, diff=diff, scaled=dict(row.scaled))
            trial.memberships.append(Membership(row.table, row.label, seed_used))

    resources = _resources(data.get("resources"), f"{where}: resources")
    if section.get("resources") is not None:
        override = _resources(section.get("resources"), f"{where}: profiles.{profile}.resources")
        resources = Resources(**{k: getattr(override, k) if getattr(override, k) is not None else getattr(resources, k)
                                 for k in RESOURCE_KEYS})
    claims = declaration_lib.claims(data.get("claims"), where, table_specs, [(r.table, r.label) for r in rows])
    return Sweep(name=name, path=path, description=description, tables=tables, profile=profile,
                 overrides=list(overrides), base_config=base_config, trials=list(trials.values()),
                 resources=resources, num_rows=len(seen), declaration=Declaration(table_specs, claims),
                 variant=variant_name(profile, file_profile, overrides))


def variant_name(profile: str, file_profile: str, overrides: Sequence[str]) -> str:
    """Which run of a sweep file this is: "default" (its own profile, no --set), else e.g.
    "profile gpu; --set train.seed=7": each variant has a parent run (manifest) of its own."""
    parts = ([] if profile == file_profile else [f"profile {profile}"]) + \
        ([f"--set {' '.join(overrides)}"] if overrides else [])
    return "; ".join(parts) or DEFAULT_VARIANT


def _validate(cfg: DictConfig, sources: List[Tuple[str, dict]], context: str, check_paths: bool = False) -> None:
    """retina's range checks; a value out of range is reported against the source that set it (the
    profile file, the sweep's base, a row, the command line), naming the row when it is another."""
    try:
        config_lib.validate(cfg, where=context, check_paths=check_paths)
    except ConfigError as e:
        key, detail = getattr(e, "key", None), getattr(e, "detail", None)
        if not key or not detail:
            raise
        setters = [source for source, values in sources if key in config_lib.flatten_dict(values)]
        setter = setters[-1] if setters else "config (default value)"
        suffix = "" if setter == context else f" (in {context})"
        raise ConfigError(f"{setter}: {detail}{suffix}") from None


def _resources(value: Any, where: str) -> Resources:
    if value is None:
        return Resources()
    if not is_mapping(value):
        raise ConfigError(f"{where} should be a mapping with keys {', '.join(RESOURCE_KEYS)}")
    for k in value:
        if k not in RESOURCE_KEYS:
            hint = config_lib.closest_key(str(k), RESOURCE_KEYS)
            raise ConfigError(f"{where}: unknown key '{k}'; " + (f"did you mean '{hint}'?" if hint else
                                                                  f"expected one of {', '.join(RESOURCE_KEYS)}"))
    out = Resources()
    for k in ("cpus_per_trial", "gpus_per_trial"):
        v = value.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                k == "cpus_per_trial" and v == 0):
            expected = "a number > 0" if k == "cpus_per_trial" else "a number >= 0 (fractions share a GPU)"
            raise ConfigError(f"{where}: {k}={v!r} is out of range; expected {expected}")
        setattr(out, k, float(v))
    v = value.get("max_concurrent")
    if v is not None:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: max_concurrent={v!r} is out of range; expected an integer >= 1")
        out.max_concurrent = v
    return out


def _check_profile_sections(data: Mapping, sections: Mapping, where: str) -> None:
    """Every ``profiles.<p>`` section is checked, not only the one in use: names, keys, axis lengths."""
    grids = data.get("grid") if isinstance(data.get("grid"), list) else []
    axis_lengths: Dict[str, set] = {}
    for i, entry in enumerate(grids):
        for key, values in grid_axes(entry, f"{where}: grid[{i}]").items():
            axis_lengths.setdefault(key, set()).add(len(values))
    for pname, section in sections.items():
        at = f"{where}: profiles.{pname}"
        try:
            config_lib.profile_path(str(pname))
        except ConfigError as e:
            raise ConfigError(f"{at}: {e}") from None
        if not is_mapping(section):
            raise ConfigError(f"{at} should be a mapping with keys {', '.join(PROFILE_SECTION_KEYS)}")
        check_keys(section, PROFILE_SECTION_KEYS, at)
        base = section.get("base") or {}
        if not is_mapping(base):
            raise ConfigError(f"{at}.base should be a mapping of config keys")
        config_lib.merge_into(config_lib.schema(), nest(base), f"{at}.base")
        axes = section.get("axes") or {}
        if not is_mapping(axes):
            raise ConfigError(f"{at}.axes should map axis keys to lists of values")
        for key, values in axes.items():
            if str(key) not in axis_lengths:
                raise ConfigError(f"{at}.axes.{key} is not an axis of any grid")
            if not isinstance(values, list) or {len(values)} != axis_lengths[str(key)]:
                raise ConfigError(f"{at}.axes.{key} should list as many values as the grid's axis "
                                  f"({', '.join(str(n) for n in sorted(axis_lengths[str(key)]))})")
        _resources(section.get("resources"), f"{at}.resources")


def distinct_data_configs(sweep: Sweep) -> List[DictConfig]:
    """One config per distinct ``data`` section among the trials (to check datasets once each)."""
    seen: Dict[str, DictConfig] = {}
    for t in sweep.trials:
        digest = json.dumps(OmegaConf.to_container(t.config.data, resolve=True), sort_keys=True)
        seen.setdefault(digest, t.config)
    return list(seen.values())


def sweep_files(directory: str | Path) -> List[Path]:
    """The sweep files in ``directory`` (profiles/ excluded)."""
    return sorted(p for p in Path(directory).glob("*.yaml") if p.is_file())
