"""Moved to `app/cli/validate.py`; this re-export stays for `bench/signal_validity.py` (not edited here).
New code imports `app.cli.validate`."""

from app.cli.validate import read_result

__all__ = ["read_result"]
