"""Label-free signals: each one defined here, once, as a reduction of per-puzzle values.

The lockstep engine (`models/trajectory.py`) records, for every model and every probe puzzle, the
values in `PER_PUZZLE` (reference: `REFERENCE_PER_PUZZLE`). A signal reduces them to one number per
candidate. The reductions take arrays of shape (candidates, puzzles), so the same code serves one
candidate in a job and every candidate of a validity run at once, under bootstrap resampling of the
puzzles (`models/validity.py`).

| signal                  | per candidate                                                        | better |
|-------------------------|----------------------------------------------------------------------|--------|
| fidelity_mean           | mean of per-puzzle fidelity (the paper's signal, DESIGN.md)          | higher |
| fidelity_p05            | its 5th percentile over puzzles                                      | higher |
| consecutive_similarity  | the candidate's own mean cos(z_H[t], z_H[t-1]) (the paper's baseline) | higher |
| answer_agreement        | share of puzzles whose argmax answer equals the reference's          | higher |
| settled_agreement       | the same, over the puzzles the reference has *settled* (below)        | higher |
| cell_agreement          | top-1 agreement per cell, mean over puzzles                           | higher |
| logit_kl_mean           | per-cell KL(reference softmax || candidate softmax) at the final step, mean over cells, then puzzles | lower |
| logit_kl_p95            | the 95th percentile over puzzles of that per-puzzle KL                | lower  |
| fidelity_tail           | share of puzzles with fidelity below tau (the job's noise floor)      | lower  |
| trajectory_area         | mean over steps of 1 - step fidelity, mean over puzzles               | lower  |
| late_drift_excess       | (1 - cos of the candidate's last z_H change) - (the reference's)     | lower  |

*Settled*: the reference's final `q_halt_logits > 0` (the model's own belief that it solved the
puzzle, the halting head trained on exactness) and its last z_H change is small
(1 - cos(z_H[last], z_H[last-1]) <= SETTLED_MAX_CHANGE). Plain answer agreement also counts puzzles
the reference gets wrong, whose answers flip under any perturbation; settled answers are the ones
whose flips cost puzzle-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

# Per-puzzle values the engine records for each candidate, and for the reference.
PER_PUZZLE = ("fidelity", "fidelity_z_L", "answer_equal", "cell_agreement", "logit_kl", "q_halt", "consecutive_final",
              "consecutive_mean", "trajectory_area")
REFERENCE_PER_PUZZLE = ("q_halt", "consecutive_final", "consecutive_mean")

# 1 - cos of the reference's last z_H change below which a halting puzzle counts as settled. Set
# from the references' own distribution (docs/validity.md), never from candidates.
SETTLED_MAX_CHANGE = 1e-3

# tau for fidelity_tail: this percentile of the noise floor's per-puzzle fidelity, and never above
# TAIL_MAX_TAU. The cap matters only where the harmless twin is nearly exact: on sudoku6-mlp the bf16
# twin's p01 is ~0.99999, and a tau that close to 1 counts every rounding difference as a tail puzzle.
# On sudoku-mlp (p01 0.9938) the cap does not bind.
TAIL_PERCENTILE = 1.0
TAIL_MAX_TAU = 0.999

Arrays = Mapping[str, np.ndarray]


def settled(reference: Arrays) -> np.ndarray:
    """(puzzles,) bool: the reference halts (q_halt > 0) and its last z_H change is small."""
    return (reference["q_halt"] > 0) & (1.0 - reference["consecutive_final"] <= SETTLED_MAX_CHANGE)


def tail_tau(noise_floor_fidelity: np.ndarray) -> float:
    return min(float(np.percentile(noise_floor_fidelity, TAIL_PERCENTILE)), TAIL_MAX_TAU)


@dataclass(frozen=True)
class Signal:
    name: str
    higher_is_better: bool
    reduce: Callable[[Arrays, Arrays, float | None], np.ndarray]  # (candidate arrays (C, N), reference (N,), tau) -> (C,)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = mask.sum(-1)
    total = np.where(mask, values, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _tail(c: Arrays, r: Arrays, tau: float | None) -> np.ndarray:
    if tau is None:
        return np.full(c["fidelity"].shape[:-1], np.nan)
    return (c["fidelity"] < tau).mean(-1)


SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("fidelity_mean", True, lambda c, r, tau: c["fidelity"].mean(-1)),
    Signal("fidelity_p05", True, lambda c, r, tau: np.percentile(c["fidelity"], 5, axis=-1)),
    Signal("consecutive_similarity", True, lambda c, r, tau: c["consecutive_mean"].mean(-1)),
    Signal("answer_agreement", True, lambda c, r, tau: c["answer_equal"].mean(-1)),
    Signal("settled_agreement", True,
           lambda c, r, tau: _masked_mean(c["answer_equal"], np.broadcast_to(settled(r), c["answer_equal"].shape))),
    Signal("cell_agreement", True, lambda c, r, tau: c["cell_agreement"].mean(-1)),
    Signal("logit_kl_mean", False, lambda c, r, tau: c["logit_kl"].mean(-1)),
    Signal("logit_kl_p95", False, lambda c, r, tau: np.percentile(c["logit_kl"], 95, axis=-1)),
    Signal("fidelity_tail", False, _tail),
    Signal("trajectory_area", False, lambda c, r, tau: c["trajectory_area"].mean(-1)),
    Signal("late_drift_excess", False, lambda c, r, tau: ((1.0 - c["consecutive_final"]) - (1.0 - r["consecutive_final"])).mean(-1)),
)}


def signal_values(candidate: Arrays, reference: Arrays, tau: float | None) -> dict[str, float | None]:
    """Every signal for one candidate from its per-puzzle arrays (shape (N,)); None where undefined."""
    stacked = {k: np.asarray(v, dtype=np.float64)[None, :] for k, v in candidate.items()}
    ref = {k: np.asarray(v, dtype=np.float64) for k, v in reference.items()}
    out: dict[str, float | None] = {}
    for name, sig in SIGNALS.items():
        value = float(sig.reduce(stacked, ref, tau)[0]) if stacked["fidelity"].size else float("nan")
        out[name] = value if np.isfinite(value) else None
    return out
