"""Moved to `app/cli/evaluate.py` and `app/cli/console.py`; this re-export stays for `app/cli_recommend.py`
(issue 16's file, not edited here). New code imports `app.cli.evaluate`."""

from carrygate.app.cli.console import console, stdout_console
from carrygate.app.cli.evaluate import build_probe_folder

__all__ = ["build_probe_folder", "console", "stdout_console"]
