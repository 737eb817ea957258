"""``python -m orchestrator``: see orchestrator/cli.py."""
import sys

from orchestrator.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
