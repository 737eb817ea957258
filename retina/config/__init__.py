"""The trainer's configuration schema: every knob the paper's ablations turn.

The dataclass defaults are the paper's recipe (ResNet-50-FPN, 600 px, 16 images per iteration,
lr 0.01, 90k iterations, FL gamma 2 alpha .25, 3 scales x 3 ratios); the profiles in
``retina/profiles/`` (``cpu`` default, ``gpu``, ``paper``) override what a smaller machine needs.

A config is an OmegaConf structured config: unknown keys and wrong types are refused. ``load_config``
merges profile, YAML files and ``key=value`` overrides and validates ranges; every mistake a user can
make becomes a one-line :class:`ConfigError` naming the file, the key and what would be right.

The package: ``schema.py`` (the dataclasses and their keys), ``loading.py`` (profiles, YAML,
overrides, merging), ``validation.py`` (ranges and combinations); everything is importable from
``retina.config``.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..paths import PROFILES_DIR  # noqa: F401 - where the profiles are
from .loading import (closest_key, from_container, load_config, load_yaml_text, merge_into, parse_dotlist,
                      profile_path, read_yaml, to_yaml)
from .schema import *  # noqa: F401,F403 - the dataclasses, constants and key helpers
from .schema import DEFAULT_PROFILE, flatten, flatten_dict, schema, valid_keys  # noqa: F401
from .validation import validate
