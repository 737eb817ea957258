"""How the command line ends: exit codes, and bad input as one line on stderr."""
from __future__ import annotations

import re
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


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure))(: .*)?$")


def error_line(text: str, limit: int = 400) -> str:
    """The line of a traceback that names the exception ("ValueError: ..."), else its last line."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line.strip()[:limit]
    return (lines[-1].strip() if lines else "unknown error")[:limit]
