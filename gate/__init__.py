"""The gate: a pure judgement of an `EvaluationResult` against a `GatePolicy` (no I/O, no torch).

It sits below both the API (`app/`) and the workers (`workers/`), which import it from here; the
rules and outcomes are specified in `gate/policy.py`'s docstring."""

from carrygate.gate.policy import LATENCY_KEY, CandidateVerdict, Decision, GatePolicy, JobVerdict, RuleOutcome, judge, judge_candidate

__all__ = ["LATENCY_KEY", "CandidateVerdict", "Decision", "GatePolicy", "JobVerdict", "RuleOutcome", "judge", "judge_candidate"]
