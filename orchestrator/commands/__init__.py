"""The subcommands of ``python -m orchestrator``, one module each (the parser is orchestrator/cli.py)."""
