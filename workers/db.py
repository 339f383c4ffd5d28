"""Engines and sessions moved to `store/sessions.py`. This re-export stays only for
`workers/calibration_history.py`, which other work still has open; new code imports `store.sessions`."""

from store.sessions import make_engine, session_factory

__all__ = ["make_engine", "session_factory"]
