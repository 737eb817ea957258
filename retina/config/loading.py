"""A config from its sources: the profile (``retina/profiles/``), YAML files and ``key=value``
overrides merged over the schema, every mistake a one-line :class:`ConfigError` naming the source,
the key and what would be right (the closest valid key for a typo)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from ..paths import PROFILES_DIR
from .schema import DEFAULT_PROFILE, RetinaConfig, flatten_dict, schema, valid_keys
from .validation import validate

def closest_key(key: str, candidates: Iterable[str]) -> Optional[str]:
    candidates = list(candidates)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if match:
        return match[0]
    leaf = key.split(".")[-1]
    by_leaf = [c for c in candidates if c.split(".")[-1] == leaf]
    return by_leaf[0] if by_leaf else None


def _unknown_key_message(where: str, key: str) -> str:
    hint = closest_key(key, valid_keys())
    right = f"did you mean '{hint}'?" if hint else "see retina/config/schema.py for the valid keys"
    return f"{where}: unknown key '{key}'; {right}"


def merge_into(cfg: DictConfig, overrides: Any, where: str) -> DictConfig:
    """Merge a dict / DictConfig of overrides into ``cfg``; mistakes become one-line ConfigErrors."""
    if overrides is None:
        return cfg
    if not isinstance(overrides, (dict, DictConfig)):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(overrides).__name__}")
    flat = flatten_dict(OmegaConf.to_container(OmegaConf.create(overrides)) if isinstance(overrides, dict)
                    else OmegaConf.to_container(overrides))
    known = set(valid_keys())
    for key in flat:
        if key not in known and not any(key.startswith(k + ".") for k in known):
            raise ConfigError(_unknown_key_message(where, key))
    try:
        return OmegaConf.merge(cfg, overrides)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        expected = _expected_type(key)
        raise ConfigError(f"{where}: key '{key}' has a value of the wrong type; expected {expected}") from None


def _expected_type(key: str) -> str:
    import typing

    node: Any = RetinaConfig

    try:
        for part in key.split("."):
            hints = typing.get_type_hints(node)
            node = hints[part]
    except Exception:
        return "the type in retina/config/schema.py"
    name = getattr(node, "__name__", None) or str(node).replace("typing.", "")
    return name


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats (OmegaConf's rule): ``1e-1`` and ``1e6`` are numbers,
    which YAML 1.1 (PyYAML's default) reads as strings."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml_text(text: str):
    """YAML text -> Python values, safely (no object construction), numbers by OmegaConf's rules."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader is a SafeLoader


def parse_dotlist(items: Iterable[str], where: str = "command line") -> dict:
    """``["loss.alpha=0.5", "train.iterations=10"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{where}: override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = load_yaml_text(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely (no object construction); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = load_yaml_text(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def profile_path(name: str) -> Path:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown profile '{name}'; expected one of {', '.join(known)}")
    return path


def load_config(
    profile: Optional[str] = DEFAULT_PROFILE,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    extra: Optional[dict] = None,
    check_paths: bool = False,
) -> DictConfig:
    """Schema <- profile <- YAML files <- ``extra`` dict <- ``key=value`` overrides, then validated.

    A value out of range is reported against the source that set it (file, "command line", ...)."""
    sources = []  # (where, overrides) in merge order
    if profile:
        path = profile_path(profile)
        sources.append((str(path), read_yaml(path)))
    sources += [(str(f), read_yaml(f)) for f in files]
    if extra:
        sources.append(("config", extra))
    overrides = list(overrides)
    if overrides:
        sources.append(("command line", parse_dotlist(overrides)))
    cfg = schema()
    for where, values in sources:
        cfg = merge_into(cfg, values, where)
    try:
        validate(cfg, check_paths=check_paths)
    except ConfigError as e:
        if e.key is None:
            raise
        setters = [where for where, values in sources if e.key in flatten_dict(OmegaConf.to_container(
            OmegaConf.create(values)))]
        where = setters[-1] if setters else "config (default value)"
        raise ConfigError(f"{where}: {e.detail}", key=e.key, detail=e.detail) from None
    return cfg



def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_container(d: dict) -> DictConfig:
    """Rebuild a validated config from a plain dict (e.g. one saved in a checkpoint or a trial)."""
    cfg = merge_into(schema(), d, "config")
    validate(cfg)
    return cfg
