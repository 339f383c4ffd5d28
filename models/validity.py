"""Signal validity: how well does each label-free signal rank and gate the real (labelled) damage?

`standard_family(config)` is a candidate population that spans the damage range in small steps
(weight bits 2..8 at three granularities, pruning 5..80 %, depth reductions, carry and activation
bits, seeded weight noise, each module group compressed alone, precision). `report(result)` measures,
for every signal of `models/signals.py` and the predicted drop of `models/drop_model.py`:
- Spearman rho and Kendall tau against delta puzzle-exact (candidate minus reference), oriented so
  that +1 means "the signal ranks the damage perfectly", with bootstrap 95 % intervals that resample
  puzzles (every candidate and the reference on the same resampled puzzles);
- the same over the near-baseline zone (|delta| <= 5 pp), where a gate decides;
- AUROC for "drop > 2 pp";
and the confusion matrix of a label-free gate against the labelled gate (`max_puzzle_exact_drop`).
The predicted drop used here is leave-one-family-out: each candidate is predicted by a calibration
fitted without its own method family, so the report never scores a fit on its own training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from carrygate.models import drop_model, signals
from carrygate.models.compress.spec import CompressionSpec, family
from carrygate.models.config import HRMConfig, TRMConfig
from carrygate.models.results import EvaluationResult

NEAR_BASELINE = 0.05
DAMAGE = 0.02


def standard_family(config: TRMConfig | HRMConfig) -> list[CompressionSpec]:
    """At least 40 candidates for any TRM / HRM config (57 for the zoo's TRMs), named by what they do."""
    bodies: dict[str, dict[str, Any]] = {}
    for bits in (2, 3, 4, 5, 6, 8):
        bodies[f"int{bits}-channel"] = {"weights": {"method": "int", "bits": bits, "granularity": "per_channel"}}
    for bits in (3, 4, 6, 8):
        bodies[f"int{bits}-tensor"] = {"weights": {"method": "int", "bits": bits, "granularity": "per_tensor", "symmetric": True}}
    for bits in (2, 3, 4):
        bodies[f"int{bits}-g32"] = {"weights": {"method": "int", "bits": bits, "granularity": "group", "group_size": 32}}
    bodies["int2-tensor"] = {"weights": {"method": "int", "bits": 2, "granularity": "per_tensor", "symmetric": True}}
    for sparsity in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        bodies[f"prune-{round(sparsity * 100)}"] = {"prune": {"sparsity": sparsity}}
    if config.H_cycles > 1:
        bodies["depth-H-1"] = {"depth": {"H_cycles": config.H_cycles - 1}}
    if config.L_cycles > 1:
        bodies["depth-L-1"] = {"depth": {"L_cycles": config.L_cycles - 1}}
    for steps in sorted({max(1, config.halt_max_steps - k) for k in (1, 2, config.halt_max_steps // 2)}):
        if steps < config.halt_max_steps:
            bodies[f"steps-{steps}"] = {"depth": {"halt_max_steps": steps}}
    for bits in (4, 5, 6, 8):
        bodies[f"carry-int{bits}"] = {"carry": {"bits": bits}}
    for bits in (4, 5, 6, 8):
        bodies[f"act-int{bits}"] = {"activations": {"bits": bits}, "weights": {"method": "int8-channel"}}
    # Up to sigma 1: a robust model (sudoku6-mlp loses 0.7 pp at 0.3) needs the larger ones for the
    # population to cross the 2 pp threshold in small steps rather than jump from 0 to 90 pp.
    for sigma in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        bodies[f"noise-{sigma:g}"] = {"noise": {"sigma": sigma, "seed": 1}}
    groups = {"heads": ["lm_head", "q_head"], "channel-mlp": ["mlp.*"]}
    groups |= {"token-mixer": ["mlp_t.*"]} if getattr(config, "mlp_t", False) else {"attention": ["self_attn.*"]}
    for group, include in groups.items():
        for bits in (2, 3, 4):
            bodies[f"only-{group}-int{bits}"] = {"weights": {"method": "int", "bits": bits, "granularity": "per_tensor",
                                                             "symmetric": True}, "include": include}
    if config.puzzle_emb_ndim > 0:
        bodies["embeddings-int8"] = {"puzzle_embedding": {"method": "int8"}}
    bodies |= {"bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"}, "int8-channel": {"weights": {"method": "int8-channel"}},
               "nf4": {"weights": {"method": "nf4"}, "exclude": ["lm_head", "q_head"]}}
    return [CompressionSpec.model_validate({"name": name, **body}) for name, body in bodies.items()]


class SignalValidity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: str
    higher_is_better: bool
    spearman: float | None
    spearman_ci95: tuple[float, float] | None
    kendall: float | None
    kendall_ci95: tuple[float, float] | None
    near_spearman: float | None = Field(description=f"over candidates with |delta| <= {NEAR_BASELINE}")
    near_spearman_ci95: tuple[float, float] | None
    near_kendall: float | None
    near_n: int
    auroc: float | None = Field(description=f"for drop > {DAMAGE}")
    n: int


class GateAgreement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: dict[str, Any]
    confusion: dict[str, int] = Field(description="label-free decision / labelled decision -> count")
    agreement: float = Field(description="share of candidates whose label-free decision is the labelled one "
                                         "(an inconclusive one counts as disagreeing)")
    decided: int = Field(0, description="candidates the label-free gate decided (go or no_go)")
    agreement_decided: float | None = Field(None, description="the agreement over the decided candidates only")
    false_go: list[str] = Field(description="candidates that pass label-free but drop more than the labelled threshold")
    inconclusive: list[str]


class PredictionValidity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    held_out_by: str
    coverage: float = Field(description="share of candidates whose 90% interval covers the measured drop")
    mae: float
    n: int
    per_candidate: list[dict[str, Any]]


class ValidityReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    puzzles: int
    candidates: int
    reference_puzzle_exact: float | None
    resamples: int
    signals: list[SignalValidity]
    gate: GateAgreement | None = None
    prediction: PredictionValidity | None = None


# -- rank statistics -------------------------------------------------------------------------------
def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    values = x[order]
    i = 0
    while i < len(x):  # average ranks over ties
        j = i
        while j + 1 < len(x) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    rx, ry = _ranks(x[ok]), _ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x: np.ndarray, y: np.ndarray) -> float | None:
    """Kendall's tau-b."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return None
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    dx, dy = dx[iu], dy[iu]
    denom = math.sqrt(float((dx != 0).sum()) * float((dy != 0).sum()))
    return float((dx * dy).sum() / denom) if denom else None


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a damaged candidate > score of an undamaged one), ties half."""
    ok = np.isfinite(score)
    pos, neg = score[ok & positive], score[ok & ~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _interval(values: list[float | None]) -> tuple[float, float] | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))) if len(finite) >= 20 else None


# -- the report ------------------------------------------------------------------------------------
def _stack(result: EvaluationResult, keep: list[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    cands = [result.candidates[i] for i in keep]
    arrays = {k: np.asarray([c.per_puzzle[k] for c in cands], dtype=np.float64) for k in (*signals.PER_PUZZLE, "exact")}
    ref = {k: np.asarray(result.reference.per_puzzle[k], dtype=np.float64) for k in (*signals.REFERENCE_PER_PUZZLE, "exact")}
    return arrays, ref, arrays.pop("exact"), ref.pop("exact")


def pool_results(results: list[EvaluationResult]) -> EvaluationResult:
    """One result holding the candidates of several runs of the same reference on the same puzzles
    (a population extended later). Each candidate is measured against its run's reference, so pooling
    is exact up to the reference's floating-point rounding on another CPU (its exactness must match
    puzzle by puzzle and its halting logits within 1e-3, or the runs are refused); a name seen twice
    keeps its first run's values."""
    base = results[0].model_copy(deep=True)
    names = {c.name for c in base.candidates}
    for other in results[1:]:
        same = (other.puzzles == base.puzzles and other.labels == base.labels
                and other.reference.per_puzzle.get("exact") == base.reference.per_puzzle.get("exact")
                and np.allclose(other.reference.per_puzzle.get("q_halt", []), base.reference.per_puzzle.get("q_halt", []), atol=1e-3))
        if not same:
            raise ValueError("these results ran different references or probe puzzles; they cannot be pooled")
        for candidate in other.candidates:
            if candidate.name not in names:
                base.candidates.append(candidate)
                names.add(candidate.name)
    return base


def tail_tau_of(result: EvaluationResult) -> float | None:
    """fidelity_tail's tau, recomputed from the noise floor's per-puzzle fidelity when the result has
    it (so a stored result follows the current `signals.tail_tau`), else the tau stored with it."""
    floor = result.noise_floor
    if floor is not None and floor.per_puzzle.get("fidelity"):
        return signals.tail_tau(np.asarray(floor.per_puzzle["fidelity"], dtype=np.float64))
    return result.fidelity_tail_tau


def leave_one_model_out(results: Mapping[str, EvaluationResult]) -> dict[str, PredictionValidity]:
    """Model name -> how the predicted drop does on that model's candidates when the calibration was
    fitted on the other models only (every method family included): a new checkpoint's situation.
    Within the fit, the conformal q comes from holding out each of the other models in turn (by
    family when only one other model is left)."""
    return leave_one_model_out_cases({name: drop_model.cases_from_result(result, model=name) for name, result in results.items()})


def leave_one_model_out_cases(cases: Mapping[str, list[drop_model.Case]]) -> dict[str, PredictionValidity]:
    out: dict[str, PredictionValidity] = {}
    for name, held in cases.items():
        train = [c for other, cs in cases.items() if other != name for c in cs]
        if not held or len(train) < 5:
            continue
        group_by = "model" if len({c.model for c in train}) > 1 else "family"
        calibration = drop_model.fit(train, group_by=group_by)
        per = []
        for case in held:
            p = drop_model.predict(calibration, case.reference, case.candidate)
            measured = case.measured_drop
            per.append({"candidate": case.name, "measured_drop": measured, "predicted": p.mean, "lo": p.lo, "hi": p.hi,
                        "covered": bool(p.lo - 1e-9 <= measured <= p.hi + 1e-9)})
        out[name] = PredictionValidity(held_out_by="model", coverage=float(np.mean([p["covered"] for p in per])),
                                       mae=float(np.mean([abs(p["measured_drop"] - p["predicted"]) for p in per])), n=len(per),
                                       per_candidate=per)
    return out


def leave_one_out_drops(result: EvaluationResult, held_out_by: str = "family") -> dict[int, tuple[np.ndarray, float, float, float]]:
    """Candidate index -> (per-puzzle predicted drop contributions, mean, lo, hi), each predicted by a
    calibration fitted on the other groups' candidates only."""
    cases = drop_model.cases_from_result(result, model="this")
    by_name = {c.name: c for c in cases}
    out: dict[int, tuple[np.ndarray, float, float, float]] = {}
    groups = sorted({getattr(c, held_out_by) for c in cases})
    for group in groups:
        train = [c for c in cases if getattr(c, held_out_by) != group]
        if len(train) < 5:
            continue
        calibration = drop_model.fit(train, group_by=held_out_by)
        for i, candidate in enumerate(result.candidates):
            case = by_name.get(candidate.name)
            if case is None or getattr(case, held_out_by) != group:
                continue
            prediction = drop_model.predict(calibration, case.reference, case.candidate)
            contributions = drop_model.per_puzzle_drop(calibration, case.reference, case.candidate)
            out[i] = (contributions, prediction.mean, prediction.lo, prediction.hi)
    return out


def report(result: EvaluationResult, *, resamples: int = 1000, seed: int = 0,
           gate: Callable[[EvaluationResult], Any] | None = None, labelled_threshold: float = DAMAGE,
           drops: dict[int, tuple[np.ndarray, float, float, float]] | None = None) -> ValidityReport:
    """Validity of every signal on one labelled evaluation (see the module docstring).

    Args:
        result: an evaluation with labels and per-puzzle values (`carrygate validate` writes one).
        resamples: bootstrap resamples of the puzzles.
        gate: judges the result label-free (a `carrygate.gate.judge`-style judge over a policy with no label
            rules), returning per-candidate verdicts with `.candidate` and `.decision`.
        drops: `leave_one_out_drops(result)` when the caller has it already (it refits per family).
    """
    if not result.labels:
        raise ValueError("signal validity needs labels")
    keep = [i for i, c in enumerate(result.candidates) if c.non_finite is None and "fidelity" in c.per_puzzle]
    arrays, ref, exact, ref_exact = _stack(result, keep)
    tau = tail_tau_of(result)
    drops = leave_one_out_drops(result) if drops is None else drops
    predicted = np.full((len(keep), exact.shape[1]), np.nan)
    for row, i in enumerate(keep):
        if i in drops:
            predicted[row] = drops[i][0]
    names = list(signals.SIGNALS) + ["predicted_drop"]

    def values(idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        c = {k: v[:, idx] for k, v in arrays.items()}
        r = {k: v[idx] for k, v in ref.items()}
        out = {name: sig.reduce(c, r, tau) for name, sig in signals.SIGNALS.items()}
        out["predicted_drop"] = predicted[:, idx].mean(-1)
        return out, exact[:, idx].mean(-1) - ref_exact[idx].mean()

    def oriented(name: str, v: np.ndarray) -> np.ndarray:
        better = signals.SIGNALS[name].higher_is_better if name in signals.SIGNALS else False
        return v if better else -v

    n = exact.shape[1]
    point, delta = values(np.arange(n))
    near = np.abs(delta) <= NEAR_BASELINE
    rng = np.random.default_rng(seed)
    boot: dict[str, dict[str, list[float | None]]] = {name: {"rho": [], "tau": [], "near": []} for name in names}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        vals, d = values(idx)
        for name in names:
            v = oriented(name, vals[name])
            boot[name]["rho"].append(spearman(v, d))
            boot[name]["tau"].append(kendall(v, d))
            boot[name]["near"].append(spearman(v[near], d[near]))
    rows = []
    for name in names:
        v = oriented(name, point[name])
        rows.append(SignalValidity(
            signal=name, higher_is_better=signals.SIGNALS[name].higher_is_better if name in signals.SIGNALS else False,
            spearman=spearman(v, delta), spearman_ci95=_interval(boot[name]["rho"]),
            kendall=kendall(v, delta), kendall_ci95=_interval(boot[name]["tau"]),
            near_spearman=spearman(v[near], delta[near]), near_spearman_ci95=_interval(boot[name]["near"]),
            near_kendall=kendall(v[near], delta[near]), near_n=int(near.sum()),
            auroc=auroc(-v, -delta > labelled_threshold), n=int(np.isfinite(v).sum()),
        ))
    out = ValidityReport(puzzles=n, candidates=len(keep), reference_puzzle_exact=result.reference.puzzle_exact,
                         resamples=resamples, signals=rows)
    rows_by_index = {i: row for row, i in enumerate(keep)}
    out.prediction = _prediction_validity(result, drops, rows_by_index, delta)
    if gate is not None:
        out.gate = gate_agreement(result, gate, labelled_threshold)
    return out


def _prediction_validity(result: EvaluationResult, drops: dict[int, tuple[np.ndarray, float, float, float]],
                         rows: dict[int, int], delta: np.ndarray) -> PredictionValidity | None:
    per = []
    for i, (_, mean, lo, hi) in sorted(drops.items()):
        measured = float(-delta[rows[i]])
        per.append({"candidate": result.candidates[i].name, "measured_drop": measured, "predicted": mean, "lo": lo, "hi": hi,
                    "covered": bool(lo - 1e-9 <= measured <= hi + 1e-9)})
    if not per:
        return None
    return PredictionValidity(held_out_by="family", coverage=float(np.mean([p["covered"] for p in per])),
                              mae=float(np.mean([abs(p["measured_drop"] - p["predicted"]) for p in per])), n=len(per), per_candidate=per)


def gate_agreement(result: EvaluationResult, gate: Callable[[EvaluationResult], Any], threshold: float) -> GateAgreement:
    verdict = gate(result)
    by_name = {v.candidate: v.decision for v in verdict.candidates}
    confusion: dict[str, int] = {}
    false_go, inconclusive, agree, total, agree_decided = [], [], 0, 0, 0
    for c in result.candidates:
        if c.non_finite is not None:
            labelled = "no_go"
        elif c.delta_puzzle_exact is None:
            continue
        else:
            labelled = "no_go" if -c.delta_puzzle_exact > threshold + 1e-9 else "go"
        decided = by_name.get(c.name, "inconclusive")
        key = f"{decided}/{labelled}"
        confusion[key] = confusion.get(key, 0) + 1
        total += 1
        agree += decided == labelled
        if decided == "go" and labelled == "no_go":
            false_go.append(c.name)
        if decided == "inconclusive":
            inconclusive.append(c.name)
        else:
            agree_decided += decided == labelled
    n_decided = total - len(inconclusive)
    return GateAgreement(policy=verdict.policy.model_dump(mode="json"), confusion=confusion, agreement=agree / max(total, 1),
                         decided=n_decided, agreement_decided=agree_decided / n_decided if n_decided else None,
                         false_go=false_go, inconclusive=inconclusive)


def family_of(name: str, result: EvaluationResult) -> str:
    spec = next(c.spec for c in result.candidates if c.name == name)
    return family(CompressionSpec.model_validate(spec)) if spec is not None else "reference"
