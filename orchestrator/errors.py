"""How the command line ends: exit codes, and bad input as one line on stderr."""
from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_TRIAL_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TRACKING_OUTAGE = 3
EXIT_INTERRUPTED = 130


def fail(error: BaseException) -> int:
    """Print ``error: <the message on one line>`` on stderr; the bad-input exit code."""
    message = " ".join(str(error).split("\n")).strip()
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
