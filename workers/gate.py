"""The gate moved to the `gate` package (below both app and workers). This re-export stays only for
`app/cli_validate.py`, which other work still has open;
new code imports `gate`."""

from gate import CandidateVerdict, GatePolicy, JobVerdict, RuleOutcome, judge, judge_candidate

__all__ = ["CandidateVerdict", "GatePolicy", "JobVerdict", "RuleOutcome", "judge", "judge_candidate"]
