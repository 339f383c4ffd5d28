"""The tables moved to the `store` package. This re-export stays only for `workers/calibration_history.py`,
which other work still has open; new code imports `store.tables` / `store.api_tables`."""

from store.tables import Result

__all__ = ["Result"]
