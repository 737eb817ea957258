"""The library's user-facing errors: a message of one line naming where, which key and what is right.

Nothing here imports the rest of retina, so every module can raise them without an import cycle.
"""
from __future__ import annotations

from typing import Optional


class ConfigError(ValueError):
    """A user's configuration mistake; its message is one line: where, which key, what is right.

    ``key`` and ``detail`` are set for range errors so a caller that knows which file or override
    set the key can name it (see :func:`retina.config.load_config`)."""

    def __init__(self, message: str, key: Optional[str] = None, detail: Optional[str] = None):
        super().__init__(message)
        self.key, self.detail = key, detail


class WeightsError(ConfigError):
    """The configured backbone weights cannot be had; one line naming them and what would work."""
