"""Predicted puzzle-exact drop, label-free at prediction time, with a 90% interval.

The idea (NannyML's CBPE, for recursive reasoners): a puzzle whose candidate answer equals the
reference's has the same exactness for certain, so only the puzzles whose answer *changed* can move
puzzle-exact. For those, with a unique answer at most one of the two is right, and

    drop_i = P(reference right | x_i) - P(candidate right | x_i)

where x_i are label-free per-puzzle features (the halting logits of both models, fidelity, logit KL,
cell agreement, whether the reference has settled). The two probabilities are logistic regressions
fitted on labelled history (the zoo's validity sweeps; the service's own labelled jobs through
`carrygate calibrate`). The predicted drop is mean_i drop_i over all puzzles; its spread is the
sum of the per-puzzle outcome variances, and the interval is mean +/- q * sigma, with q chosen by
split-conformal calibration: studentised residuals of candidates predicted by a fit that did not see
their method family (so q covers what a new kind of compression does, not only new puzzles).

The interval is clipped to the one bound that holds without any model: |drop| <= the share of puzzles
whose answer changed (`changed_share`). With no changed answer it is exactly [0, 0], which is right:
the candidate's exactness equals the reference's puzzle by puzzle; with 1 % changed it cannot exceed
1 pp, however wide q * sigma is. That is what lets a near-baseline candidate be decided at all on a
few hundred puzzles.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from carrygate.models.results import DropPrediction, EvaluationResult, ModelResult
from carrygate.models.signals import settled

DEFAULT_PATH = Path(__file__).with_name("drop_calibration.json")
COVERAGE = 0.90
FEATURES = ("bias", "ref_q_halt", "cand_q_halt", "fidelity", "log_kl", "cell_agreement", "ref_settled")
_RIDGE = 1.0


class DropCalibration(BaseModel):
    """A fitted predictor: coefficients of the two logistic regressions and the conformal multiplier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(description="content hash of the fitted numbers (a stored calibration may prefix its own id)")
    features: list[str]
    ref_coef: list[float] = Field(description="P(reference right | changed answer, features)")
    cand_coef: list[float] = Field(description="P(candidate right | changed answer, features)")
    conformal_q: float = Field(description="interval half-width in units of the predicted sigma")
    coverage: float = COVERAGE
    candidates: int = Field(description="labelled candidates it was fitted on")
    changed_puzzles: int = Field(description="puzzles with a changed answer among them")
    sources: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """One labelled candidate for fitting: per-puzzle arrays of the reference and the candidate."""

    reference: dict[str, np.ndarray]  # q_halt, consecutive_final, exact
    candidate: dict[str, np.ndarray]  # answer_equal, q_halt, fidelity, logit_kl, cell_agreement, exact
    family: str
    model: str
    name: str

    @property
    def measured_drop(self) -> float:
        return float(self.reference["exact"].mean() - self.candidate["exact"].mean())


def _features(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(changed puzzles, len(FEATURES)) design matrix, each column scaled to about unit range."""
    columns = [
        np.ones(int(rows.sum())),
        np.clip(reference["q_halt"][rows], -20, 20) / 10,
        np.clip(candidate["q_halt"][rows], -20, 20) / 10,
        candidate["fidelity"][rows],
        np.log10(candidate["logit_kl"][rows] + 1e-6) / 6,
        candidate["cell_agreement"][rows],
        settled(reference)[rows].astype(np.float64),
    ]
    return np.stack(columns, axis=1)


def _logistic(X: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Ridge-regularised logistic regression by Newton's method (the intercept is penalised too,
    lightly; with few rows that keeps it finite when every label is the same)."""
    w = np.zeros(X.shape[1])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
        grad = X.T @ (p - y) + _RIDGE * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + _RIDGE * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


def _probabilities(ref_coef: np.ndarray, cand_coef: np.ndarray, reference: dict[str, np.ndarray],
                   candidate: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per puzzle (all puzzles; 0 where the answer is unchanged): P(reference right), P(candidate right)."""
    n = candidate["answer_equal"].size
    rows = candidate["answer_equal"] < 0.5
    p_ref, p_cand = np.zeros(n), np.zeros(n)
    if rows.any():
        X = _features(reference, candidate, rows)
        r, c = _sigmoid(X @ ref_coef), _sigmoid(X @ cand_coef)
        scale = np.where(r + c > 1, 1 / np.maximum(r + c, 1e-12), 1.0)  # at most one of two different answers is right
        p_ref[rows], p_cand[rows] = r * scale, c * scale
    return p_ref, p_cand


def _point(ref_coef: np.ndarray, cand_coef: np.ndarray, reference: dict[str, np.ndarray],
           candidate: dict[str, np.ndarray]) -> tuple[float, float]:
    """(predicted drop, its sigma) over all puzzles."""
    n = candidate["answer_equal"].size
    if n == 0:
        return 0.0, 0.0
    p_ref, p_cand = _probabilities(ref_coef, cand_coef, reference, candidate)
    mean = float((p_ref - p_cand).sum() / n)
    variance = float((p_ref + p_cand - (p_ref - p_cand) ** 2).sum() / n**2)
    return mean, math.sqrt(max(variance, 0.0))


def per_puzzle_drop(calibration: DropCalibration, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> np.ndarray:
    """Each puzzle's expected contribution to the drop; their mean is `predict(...).mean`."""
    p_ref, p_cand = _probabilities(np.asarray(calibration.ref_coef), np.asarray(calibration.cand_coef), reference, candidate)
    return p_ref - p_cand


def _fit_coefficients(cases: Sequence[Case]) -> tuple[np.ndarray, np.ndarray, int]:
    X_parts, y_ref, y_cand = [], [], []
    for case in cases:
        rows = case.candidate["answer_equal"] < 0.5
        if rows.any():
            X_parts.append(_features(case.reference, case.candidate, rows))
            y_ref.append(case.reference["exact"][rows])
            y_cand.append(case.candidate["exact"][rows])
    if not X_parts:
        zeros = np.zeros(len(FEATURES))
        return zeros, zeros, 0
    X = np.concatenate(X_parts)
    return _logistic(X, np.concatenate(y_ref)), _logistic(X, np.concatenate(y_cand)), X.shape[0]


def _conformal_quantile(residuals: list[float], coverage: float) -> float:
    """Split-conformal quantile with the finite-sample correction; +inf when too few residuals."""
    n = len(residuals)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return math.inf
    return float(sorted(residuals)[rank - 1])


def _studentised(case: Case, ref_coef: np.ndarray, cand_coef: np.ndarray) -> float:
    mean, sigma = _point(ref_coef, cand_coef, case.reference, case.candidate)
    n = case.candidate["answer_equal"].size
    # half a puzzle of slack: a changed answer on a single puzzle must not make the ratio explode
    return abs(case.measured_drop - mean) / (sigma + 0.5 / max(n, 1))


def fit(cases: Sequence[Case], *, group_by: str = "family", coverage: float = COVERAGE, sources: Sequence[str] = ()) -> DropCalibration:
    """Fit on every case; take the conformal q from each group's residuals under a fit without it.

    Args:
        cases: labelled candidates (`cases_from_result`).
        group_by: `family` or `model`: what the conformal residuals are held out by.
        coverage: the interval's target coverage.
    """
    ref_coef, cand_coef, changed = _fit_coefficients(cases)
    groups = sorted({getattr(c, group_by) for c in cases})
    residuals: list[float] = []
    if len(groups) > 1:
        for group in groups:
            held = [c for c in cases if getattr(c, group_by) == group]
            r, k, _ = _fit_coefficients([c for c in cases if getattr(c, group_by) != group])
            residuals += [_studentised(c, r, k) for c in held]
    else:
        residuals = [_studentised(c, ref_coef, cand_coef) for c in cases]
    q = _conformal_quantile(residuals, coverage)
    body = {"features": list(FEATURES), "ref_coef": [round(float(v), 8) for v in ref_coef],
            "cand_coef": [round(float(v), 8) for v in cand_coef], "conformal_q": round(q, 6) if math.isfinite(q) else 1e6,
            "coverage": coverage, "candidates": len(cases), "changed_puzzles": changed, "sources": sorted(sources)}
    version = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    return DropCalibration(version=version, **body)


def predict(calibration: DropCalibration, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> DropPrediction:
    if calibration.features != list(FEATURES):
        raise ValueError(f"calibration {calibration.version} uses features {calibration.features}, this code {list(FEATURES)}")
    mean, sigma = _point(np.asarray(calibration.ref_coef), np.asarray(calibration.cand_coef), reference, candidate)
    n = candidate["answer_equal"].size
    half = calibration.conformal_q * (sigma + 0.5 / max(n, 1)) if sigma > 0 or mean != 0 else 0.0
    bound = changed_share(candidate)
    return DropPrediction(mean=mean, lo=max(mean - half, -bound), hi=min(mean + half, bound), calibration=calibration.version)


def changed_share(candidate: dict[str, np.ndarray]) -> float:
    """Share of probe puzzles whose answer changed: a label-free bound on |measured drop| on this probe,
    since an unchanged answer keeps its exactness and each changed one moves puzzle-exact by at most 1/n."""
    n = candidate["answer_equal"].size
    return float((candidate["answer_equal"] < 0.5).sum() / n) if n else 0.0


# -- from and onto results ---------------------------------------------------------------------------
_REF_KEYS = ("q_halt", "consecutive_final")
_CAND_KEYS = ("answer_equal", "q_halt", "fidelity", "logit_kl", "cell_agreement")


def _arrays(model: ModelResult, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    if any(k not in model.per_puzzle for k in keys):
        return None
    return {k: np.asarray(model.per_puzzle[k], dtype=np.float64) for k in keys}


def predict_drops(result: EvaluationResult, calibration: DropCalibration | None) -> None:
    """Set `predicted_puzzle_exact_drop` on every finite candidate that has the per-puzzle values."""
    if calibration is None:
        return
    reference = _arrays(result.reference, _REF_KEYS)
    if reference is None:
        return
    for candidate in result.candidates:
        arrays = _arrays(candidate, _CAND_KEYS)
        if arrays is not None and candidate.non_finite is None:
            candidate.predicted_puzzle_exact_drop = predict(calibration, reference, arrays)


def cases_from_result(result: EvaluationResult, model: str) -> list[Case]:
    """The labelled, finite candidates of one result as fitting cases."""
    from carrygate.models.compress.spec import CompressionSpec, family

    reference = _arrays(result.reference, (*_REF_KEYS, "exact"))
    if not result.labels or reference is None:
        return []
    cases = []
    for candidate in result.candidates:
        arrays = _arrays(candidate, (*_CAND_KEYS, "exact"))
        if arrays is None or candidate.non_finite is not None or candidate.spec is None:
            continue
        cases.append(Case(reference, arrays, family(CompressionSpec.model_validate(candidate.spec)), model, candidate.name))
    return cases


@lru_cache(maxsize=1)
def default_calibration() -> DropCalibration | None:
    """The calibration shipped with carrygate (fitted on the zoo's validity sweeps), if present."""
    if not DEFAULT_PATH.is_file():
        return None
    return DropCalibration.model_validate_json(DEFAULT_PATH.read_text())
