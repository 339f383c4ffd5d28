"""Revision scripts, one per schema change, named `YYYY_MM_DD-<rev>_<slug>.py`."""
