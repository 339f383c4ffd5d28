"""`recommend`: the cheapest compression that still reasons, found without labels.

1. Sensitivity map (`sensitivity`): each module group alone, each kind, each layer at a few bit
   widths, the puzzle table at INT8, and "compress everything from ACT step s on" — one lockstep run.
2. Search on a probe subset, label-free (`search`):
   - a *ladder* per base width b (2..6 bits): the k most sensitive groups kept at 8 bits, the rest at b;
     bisection over k finds the least protection that passes (one run per bisection round, all b at once);
   - *greedy* refinement of the cheapest passing point: lower one group by one width level, keep the
     cheapest neighbour that still passes, repeat;
   - *depth*: the cheapest configurations that failed, re-run with MORE ACT steps than the reference
     (depth buying back what the bits lost); under a FLOP/latency budget, fewer steps / H cycles too;
   - *pruning*: the best point with its quantised MLPs' intermediate units structurally pruned;
   - *precision*: the best point with what it keeps in float at bf16 / fp16, and the whole model as
     ONNX Runtime dynamic INT8 (the deployed integer kernels).
3. Confirm the finalists on the full probe, labels when present, in one run; the cheapest confirmed
   one is the recommendation, judged by the default gate policy exactly as `carrygate gate --local` would.

The reference's (and the noise floor's) trajectories are computed once and replayed in every run
(`replay.Replay`); the engine, the signals and the drop model are the ones every job uses.

Over 400 lines on purpose: the stages above are methods of one `Searcher`, which holds the replayed
reference and noise floor, the probes, the evaluation count and the points found so far, state that
every stage reads and extends; split across modules, each stage would take that state apart again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from carrygate.models.compress import CompressedCandidate, CompressionSpec, apply
from carrygate.models.drop_model import DropCalibration
from carrygate.models.evaluate import Probe, build_candidates, measure, noise_floor
from carrygate.models.footprint import footprint
from carrygate.models.reasoner import RecursiveReasoner
from carrygate.models.recommend.groups import ModuleGroup, kinds, layer_of, module_groups
from carrygate.models.recommend.replay import FromStep, Replay
from carrygate.models.recommend.results import (
    Budget,
    Cost,
    Damage,
    Finalist,
    Point,
    Recommendation,
    SensitivityCell,
    SensitivityMap,
    Tolerance,
)
from carrygate.models.results import EvaluationResult, ModelResult
from carrygate.models.trajectory import Candidate, run_lockstep

WIDTHS = (2, 3, 4, 5, 6, 8)  # bit widths a group can take; None (float) above 8
PROTECT_BITS = 8  # the first protection rung; float is the second
Bits = dict[str, int | None]
Progress = Callable[[str, int], None]  # (stage, candidate evaluations so far)


# -- specs from bit assignments --------------------------------------------------------------------
def _int(bits: int) -> dict[str, Any]:
    # Per-channel asymmetric min/max: the paper's calibrated scheme, at any width.
    return {"method": "int", "bits": bits, "granularity": "per_channel", "symmetric": False}


def spec_for(groups: list[ModuleGroup], bits: Bits, *, name: str | None = None, steps: int | None = None,
             reference_steps: int | None = None, extra: dict[str, Any] | None = None) -> CompressionSpec:
    """One `CompressionSpec` for a per-group assignment: the most common width is `weights`, the
    others are `layers` overrides, float groups are `exclude`d."""
    quantised = [b for b in bits.values() if b is not None]
    body: dict[str, Any] = dict(extra or {})
    if quantised:
        common = max(sorted(set(quantised), reverse=True), key=quantised.count)
        body["weights"] = _int(common)
        others = sorted({b for b in quantised if b != common})
        body["layers"] = [{"include": [g.pattern for g in groups if bits[g.name] == b], "weights": _int(b)} for b in others]
        floats = [g.pattern for g in groups if bits[g.name] is None]
        if floats:
            body["exclude"] = floats
    elif body.get("prune"):
        body["exclude"] = []
    if steps is not None and steps != reference_steps:
        body["depth"] = {"halt_max_steps": steps}
    return CompressionSpec.model_validate({"name": name, **body})


def label(bits: Bits, groups: list[ModuleGroup]) -> str:
    """Compact name, e.g. `4/8,4,4,4,f,f` (widths in group order)."""
    return "/".join([",".join("f" if bits[g.name] is None else str(bits[g.name]) for g in groups)])


def _lower(b: int | None) -> int | None:
    """One width level down (float -> 8 -> 6 -> 5 -> 4 -> 3 -> 2); None at the bottom."""
    if b is None:
        return WIDTHS[-1]
    i = WIDTHS.index(b)
    return WIDTHS[i - 1] if i > 0 else None


def damage_of(result: ModelResult) -> Damage:
    drop = result.predicted_puzzle_exact_drop
    return Damage(
        fidelity=result.fidelity.mean if result.fidelity else None,
        fidelity_p05=result.fidelity.p05 if result.fidelity else None,
        predicted_drop_mean=drop.mean if drop else None,
        predicted_drop_hi=drop.hi if drop else None,
        answer_agreement=result.answer_agreement,
        non_finite=result.non_finite is not None,
        puzzle_exact_drop=-result.delta_puzzle_exact if result.delta_puzzle_exact is not None else None,
    )


def passes(damage: Damage, tolerance: Tolerance) -> bool:
    if damage.non_finite:
        return False
    if tolerance.max_predicted_drop is not None:
        return damage.predicted_drop_hi is not None and damage.predicted_drop_hi <= tolerance.max_predicted_drop
    return damage.fidelity is not None and tolerance.min_fidelity is not None and damage.fidelity >= tolerance.min_fidelity


def badness(damage: Damage, tolerance: Tolerance) -> float:
    """The tolerance's own quantity, oriented so lower is better (front and ordering)."""
    if damage.non_finite:
        return float("inf")
    if tolerance.max_predicted_drop is not None:
        return damage.predicted_drop_hi if damage.predicted_drop_hi is not None else float("inf")
    return -(damage.fidelity if damage.fidelity is not None else -1.0)


def within(cost: Cost, budget: Budget) -> bool:
    checks = [(budget.max_weight_fraction, cost.weight_fraction), (budget.max_weight_bytes, cost.weight_bytes),
              (budget.max_sram_bytes, cost.sram_bytes), (budget.max_gflop_per_puzzle, cost.gflop_per_puzzle),
              (budget.max_step_ms, cost.step_ms)]
    return all(bound is None or value <= bound for bound, value in checks)


def pareto_front(points: list[Point], tolerance: Tolerance) -> list[Point]:
    """Non-dominated points by (weight bytes, damage), cheapest first; damage strictly falls along it."""
    front: list[Point] = []
    best = float("inf")
    for point in sorted(points, key=lambda p: (p.cost.weight_bytes, badness(p.damage, tolerance))):
        bad = badness(point.damage, tolerance)
        if bad < best:
            front.append(point)
            best = bad
    return front


def step_ms(model: RecursiveReasoner, repeats: int = 20) -> float:
    """Median wall time of one ACT step at batch 1 on this CPU (the latency budget's yardstick)."""
    x = model.input_embeddings(torch.zeros(1, model.config.seq_len, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
    carry = model.initial_carry(1)
    times = []
    with torch.inference_mode():
        for t in range(repeats + 2):
            start = time.perf_counter()
            carry = model.step(carry, x, t).carry
            times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    return 1000.0 * times[len(times) // 2]


@dataclass
class _Eval:
    spec: CompressionSpec
    model: Any
    name: str


class Searcher:
    """Holds the reference, its replayed trajectory and the probes; every run goes through `_run`."""

    def __init__(self, reference: RecursiveReasoner, probe: Probe, budget: Budget, tolerance: Tolerance, *,
                 search_puzzles: int = 64, batch_size: int = 64, calibration: DropCalibration | None = None,
                 on_progress: Progress | None = None, sensitivity_bits: tuple[int, ...] = (2, 4), step_bits: int = 3,
                 extra_steps: tuple[int, ...] = (2, 4), finalists: int = 3,
                 verdict_of: Callable[[EvaluationResult], str] | None = None, require_go: bool = False,
                 with_ort: bool | None = None) -> None:
        self.reference, self.probe, self.budget, self.tolerance = reference, probe, budget, tolerance
        self.search_probe = Probe(probe.inputs[:search_puzzles], probe.puzzle_identifiers[:search_puzzles],
                                  None if probe.labels is None else probe.labels[:search_puzzles])
        self.batch_size, self.calibration, self.on_progress = batch_size, calibration, on_progress
        self.sensitivity_bits, self.step_bits, self.extra_steps, self.n_finalists = sensitivity_bits, step_bits, extra_steps, finalists
        self.verdict_of, self.require_go = verdict_of, require_go
        if with_ort is None:
            import importlib.util

            with_ort = importlib.util.find_spec("onnxruntime") is not None
        self.with_ort = with_ort
        self.groups = module_groups(reference)
        self.replay = Replay(reference)
        floor = noise_floor(reference)
        self.floor = Candidate(floor.name, Replay(floor.model), floor.spec, role="noise_floor")
        self.ref_footprint = footprint(reference)
        self.ref_steps = reference.config.halt_max_steps
        self.ref_step_ms = step_ms(reference)
        self.evaluations = 0
        self.points: dict[str, Point] = {}
        self.stage = "setup"

    # -- running ---------------------------------------------------------------------------------
    def _run(self, evals: list[_Eval], probe: Probe, *, with_footprint: bool = False) -> EvaluationResult:
        candidates = [Candidate(e.name, e.model, e.spec) for e in evals] + [self.floor]
        result = run_lockstep(self.replay, candidates, probe.batches(self.batch_size))  # type: ignore[arg-type]
        measure(result, self.reference, candidates, probe, with_footprint=with_footprint, calibration=self.calibration)
        self.evaluations += len(evals)
        if self.on_progress is not None:
            self.on_progress(self.stage, self.evaluations)
        return result

    def cost(self, spec: CompressionSpec, model: CompressedCandidate | None = None) -> Cost:
        model = model if model is not None else apply(spec, self.reference)
        fp = footprint(model)
        return Cost(weight_bytes=fp.total_bytes, weight_fraction=fp.total_bytes / self.ref_footprint.total_bytes,
                    sram_bytes=fp.sram_streaming_bytes, gflop_per_puzzle=fp.gflops_per_puzzle,
                    step_ms=self.ref_step_ms * fp.gflops_per_step / self.ref_footprint.gflops_per_step)

    def evaluate_points(self, configs: list[tuple[Bits, int, dict[str, Any] | None, str]]) -> list[Point]:
        """Evaluate (bits, steps, extra spec parts, stage) on the search probe; already-seen specs are not re-run."""
        todo: list[tuple[_Eval, Bits, int, str, Cost]] = []
        out: list[Point | None] = []
        queued: set[str] = set()
        for bits, steps, extra, stage in configs:
            spec = spec_for(self.groups, bits, steps=steps, reference_steps=self.ref_steps, extra=extra)
            key = spec.content_hash
            if key in self.points or key in queued:  # seen before, or twice in this round (k = 0 of two rungs)
                out.append(self.points.get(key))
                continue
            queued.add(key)
            name = label(bits, self.groups) + (f"@{steps}" if steps != self.ref_steps else "")
            name += "+prune" if extra and "prune" in extra else ""
            name += f"+{extra['precision']}" if extra and "precision" in extra else ""
            name = "ort-dynamic-int8" if extra and "onnxruntime" in extra else name
            spec = spec.model_copy(update={"name": name})
            if spec.onnxruntime is not None:  # exported, ORT-quantised (calibrated on the search probe) and wrapped
                model = build_candidates(self.reference, [spec], self.search_probe, self.batch_size, with_noise_floor=False)[0].model
            else:
                model = apply(spec, self.reference)
            todo.append((_Eval(spec, model, name), bits, steps, stage, self.cost(spec, model)))
            out.append(None)
        if todo:
            result = self._run([t[0] for t in todo], self.search_probe)
            for (ev, bits, steps, stage, cost), res in zip(todo, result.candidates, strict=True):
                damage = damage_of(res)
                point = Point(name=ev.name, spec=ev.spec.to_dict() | {"name": ev.name}, bits=bits, depth_steps=steps, cost=cost,
                              damage=damage, stage=stage, within_budget=within(cost, self.budget),
                              within_tolerance=passes(damage, self.tolerance))
                self.points[ev.spec.content_hash] = point
        return [p if p is not None else self.points[spec_for(self.groups, c[0], steps=c[1], reference_steps=self.ref_steps,
                                                             extra=c[2]).content_hash] for p, c in zip(out, configs, strict=True)]

    # -- 1. sensitivity ---------------------------------------------------------------------------
    def sensitivity(self) -> SensitivityMap:
        self.stage = "sensitivity"
        rows: list[tuple[str, str, int | None, Any, CompressionSpec]] = []

        def only(patterns: list[str], bits: int) -> CompressionSpec:
            return CompressionSpec.model_validate({"weights": _int(bits), "include": patterns})

        for bits in self.sensitivity_bits:
            for g in self.groups:
                rows.append((g.name, "group", bits, None, only([g.pattern], bits)))
            for kind, members in kinds(self.groups).items():
                if len(members) > 1:
                    rows.append((f"kind:{kind}", "kind", bits, None, only([m.pattern for m in members], bits)))
            layers: dict[str, list[ModuleGroup]] = {}
            for g in self.groups:
                if layer_of(g) is not None:
                    layers.setdefault(layer_of(g), []).append(g)  # type: ignore[arg-type]
            for layer, members in layers.items():
                rows.append((f"layer:{layer}", "layer", bits, None, only([m.pattern for m in members], bits)))
        if self.reference.puzzle_emb is not None and self.reference.puzzle_emb.weights.shape[0] > 1:
            rows.append(("embeddings", "embeddings", None, None, CompressionSpec.model_validate({"puzzle_embedding": {"method": "int8"}})))
        uniform = apply(only(["*"], self.step_bits), self.reference)
        for s in range(self.ref_steps):
            spec = only(["*"], self.step_bits).model_copy(update={"name": f"step>={s}"})
            rows.append((f"step>={s}", "step", self.step_bits, FromStep(self.reference, uniform, s), spec))
        evals = [_Eval(spec, model if model is not None else apply(spec, self.reference), f"{row}@{bits}")
                 for row, _, bits, model, spec in rows]
        result = self._run(evals, self.search_probe)
        cells = [SensitivityCell(row=row, axis=axis, bits=bits, damage=damage_of(res))  # type: ignore[arg-type]
                 for (row, axis, bits, _, _), res in zip(rows, result.candidates, strict=True)]
        score = {g.name: 0.0 for g in self.groups}
        for cell in cells:
            if cell.axis == "group":
                d = cell.damage
                score[cell.row] += float("inf") if d.non_finite else (1.0 - (d.fidelity or 0.0)) + max(0.0, d.predicted_drop_hi or 0.0)
        order = sorted(score, key=lambda name: -score[name])
        return SensitivityMap(puzzles=len(self.search_probe), cells=cells, order=order)

    # -- 2. search ---------------------------------------------------------------------------------
    def _ladder(self, rung: tuple[int, int | None], k: int, order: list[str]) -> Bits:
        """Base width for every group, the k most sensitive kept at the protection width (None: float)."""
        base, protect = rung
        protected = set(order[:k])
        return {g.name: (protect if g.name in protected else base) for g in self.groups}

    def search(self, order: list[str]) -> None:
        ref = self.ref_steps
        self.stage = "baselines"
        token_mixer = [g.name for g in self.groups if g.kind in ("token_mixer", "attention")]
        recipe = {g.name: (None if g.name in token_mixer else 4) for g in self.groups}
        self.evaluate_points([({g.name: 8 for g in self.groups}, ref, None, "baseline"), (recipe, ref, None, "baseline")])
        # ladders + bisection, every (base width, protection) in the same runs; protection at 8 bits
        # first, and in float for modules that no integer width keeps (revert-to-float)
        rungs = [(b, protect) for protect in (PROTECT_BITS, None) for b in WIDTHS if b < PROTECT_BITS]
        k_max: dict[tuple[int, int | None], int] = {}
        for rung in rungs:
            ks = [k for k in range(len(order) + 1)
                  if within(self.cost(spec_for(self.groups, self._ladder(rung, k, order))), self.budget)]
            if ks and (rung[1] is not None or max(ks) > 0):  # a float ladder that can protect nothing is the 8-bit one at k=0
                k_max[rung] = max(ks)
        self.stage = "bisect"
        lo = dict.fromkeys(k_max, 0)
        hi = dict(k_max)
        ends = [(r, k) for r in k_max for k in sorted({0, k_max[r]})]
        first = self.evaluate_points([(self._ladder(r, k, order), ref, None, "ladder") for r, k in ends])
        passed = {end: point.within_tolerance for end, point in zip(ends, first, strict=True)}
        # invariant: hi passes, lo fails; a ladder whose most protected rung fails is dropped
        live = {r for r in k_max if passed[(r, hi[r])] and not passed[(r, 0)]}
        while live:
            mids = {r: (lo[r] + hi[r]) // 2 for r in live if hi[r] - lo[r] > 1}
            if not mids:
                break
            points = self.evaluate_points([(self._ladder(r, m, order), ref, None, "bisect") for r, m in mids.items()])
            for (r, m), point in zip(mids.items(), points, strict=True):
                if point.within_tolerance:
                    hi[r] = m
                else:
                    lo[r] = m
            live = {r for r in live if hi[r] - lo[r] > 1}
        # greedy: lower one group at a time from the cheapest passing point
        self.stage = "greedy"
        for _ in range(3):
            best = self.best()
            if best is None:
                break
            neighbours = []
            for name in reversed(order):  # least sensitive first
                lowered = dict(best.bits)
                lowered[name] = _lower(best.bits[name])
                if lowered[name] is not None:  # 2 bits is the floor
                    neighbours.append((lowered, best.depth_steps, None, "greedy"))
            if not neighbours:
                break
            points = self.evaluate_points(neighbours)
            if not any(p.within_tolerance and p.within_budget and p.cost.weight_bytes < best.cost.weight_bytes for p in points):
                break
        # depth: the cheapest failures, with more steps than the reference; fewer under a compute budget
        self.stage = "depth"
        best = self.best()
        failures = sorted((p for p in self.points.values() if p.within_budget and not p.within_tolerance and not p.damage.non_finite
                           and p.depth_steps == ref and "prune" not in p.spec
                           and (best is None or p.cost.weight_bytes < best.cost.weight_bytes)),
                          key=lambda p: badness(p.damage, self.tolerance))[:2]
        configs = [(p.bits, ref + extra, None, "depth") for p in failures for extra in self.extra_steps]
        if best is not None and (self.budget.max_gflop_per_puzzle is not None or self.budget.max_step_ms is not None):
            configs += [(best.bits, steps, None, "depth") for steps in (ref - 2, ref - 1) if steps >= 1]
        if configs:
            self.evaluate_points(configs)
        # pruning of the best point's quantised MLPs
        self.stage = "prune"
        best = self.best()
        if best is not None:
            self.evaluate_points([(best.bits, best.depth_steps, {"prune": {"sparsity": s, "structure": "intermediate"}}, "prune")
                                  for s in (0.25,)])
        self.search_precision()

    def search_precision(self) -> None:
        """The float paths a deployment also has: the best point with everything it keeps in float (groups
        reverted to float, norms, embeddings, the carry) at bf16 or fp16, and the whole model as ONNX
        Runtime dynamic INT8, the deployed integer kernels (one export; skipped when ORT is missing)."""
        self.stage = "precision"
        best = self.best()
        if best is not None and "prune" not in best.spec:
            self.evaluate_points([(best.bits, best.depth_steps, {"precision": half}, "precision") for half in ("bf16", "fp16")])
        if self.with_ort:
            floats: Bits = {g.name: None for g in self.groups}
            self.evaluate_points([(floats, self.ref_steps, {"onnxruntime": {"quantization": "dynamic"}}, "ort")])

    def best(self) -> Point | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def ranked(self) -> list[Point]:
        ok = [p for p in self.points.values() if p.within_budget and p.within_tolerance]
        return sorted(ok, key=lambda p: (p.cost.weight_bytes, p.cost.gflop_per_puzzle, badness(p.damage, self.tolerance)))

    # -- 3. confirm --------------------------------------------------------------------------------
    def finalist_rounds(self) -> list[list[Point]]:
        """Finalists in rounds of `n_finalists`: each round spreads along the passing points, every next
        one strictly safer on the search probe than the last (the cheapest ones are often near-ties
        of the same edge case), so one confirmation run covers a margin, not a single point."""
        ranked, rounds, used = self.ranked(), [], set()
        while len(rounds) < 3 and len(used) < len(ranked):
            picked: list[Point] = []
            for point in ranked:
                if point.name in used:
                    continue
                if picked and badness(point.damage, self.tolerance) >= badness(picked[-1].damage, self.tolerance):
                    continue
                picked.append(point)
                if len(picked) == self.n_finalists:
                    break
            if not picked:
                break
            used |= {p.name for p in picked}
            rounds.append(picked)
        return rounds

    def confirm(self) -> tuple[list[Finalist], Finalist | None, EvaluationResult | None]:
        """Run each round of finalists on the full probe until one is confirmed (the cheapest confirmed wins)."""
        self.stage = "confirm"
        finalists: list[Finalist] = []
        for picked in self.finalist_rounds():
            round_finalists, result = self._confirm(picked)
            finalists += round_finalists
            chosen = next((f for f in round_finalists if f.confirmed), None)
            if chosen is not None:
                return finalists, chosen, result
        return finalists, None, None

    def _confirm(self, picked: list[Point]) -> tuple[list[Finalist], EvaluationResult]:
        specs = [CompressionSpec.model_validate(p.spec) for p in picked]
        candidates = build_candidates(self.reference, specs, self.probe, self.batch_size, with_noise_floor=False)
        result = self._run([_Eval(c.spec, c.model, c.name) for c in candidates if c.spec is not None], self.probe, with_footprint=True)
        label_bound = self.tolerance.max_predicted_drop if self.tolerance.max_predicted_drop is not None else 0.02
        finalists = []
        for point, spec, res in zip(picked, specs, result.candidates, strict=True):
            damage = damage_of(res)
            cost = self.cost(spec)
            reasons = []
            if not passes(damage, self.tolerance):
                reasons.append("the label-free tolerance fails on the full probe")
            if damage.puzzle_exact_drop is not None and damage.puzzle_exact_drop > label_bound:
                reasons.append(f"measured puzzle-exact drop {damage.puzzle_exact_drop:.4f} > {label_bound:g}")
            if not within(cost, self.budget):
                reasons.append("over budget")
            verdict = None
            if self.verdict_of is not None:
                # this finalist alone, as `gate --local` runs it: same probe, reference and noise floor
                verdict = self.verdict_of(result.model_copy(update={"candidates": [res]}))
                if self.require_go and verdict != "go":
                    reasons.append(f"gate verdict {verdict}")
            finalists.append(Finalist(name=point.name, spec=spec.to_dict() | {"name": point.name}, cost=cost, damage=damage,
                                      confirmed=not reasons, reason="; ".join(reasons) or "confirmed on the full probe", verdict=verdict))
        return finalists, result


def recommend(reference: RecursiveReasoner, probe: Probe, budget: Budget, tolerance: Tolerance, *, search_puzzles: int = 64,
              batch_size: int = 64, calibration: DropCalibration | None = None, on_progress: Progress | None = None,
              checkpoint: str | None = None, verdict_of: Callable[[EvaluationResult], str] | None = None,
              require_go: bool = False, with_ort: bool | None = None) -> Recommendation:
    """Sensitivity map, label-free search under `budget` within `tolerance`, confirmation on the full `probe`.

    `verdict_of` judges each finalist's full-probe result alone (the caller passes the gate: models sits below
    it); with `require_go` a finalist is confirmed only when that verdict is go. `with_ort` (default: when
    onnxruntime is installed) adds the ONNX Runtime dynamic INT8 point, one export and ORT run."""
    start = time.perf_counter()
    searcher = Searcher(reference, probe, budget, tolerance, search_puzzles=search_puzzles, batch_size=batch_size,
                        calibration=calibration, on_progress=on_progress, verdict_of=verdict_of, require_go=require_go,
                        with_ort=with_ort)
    sensitivity = searcher.sensitivity()
    searcher.search(sensitivity.order)
    finalists, chosen, _ = searcher.confirm()
    verdict = chosen.verdict if chosen is not None else None
    points = list(searcher.points.values())
    on_front = {p.name for p in pareto_front(points, tolerance)}
    points = [p.model_copy(update={"on_front": p.name in on_front}) for p in points]
    notes = []
    if chosen is None:
        where = "the full probe" if finalists else f"the {len(searcher.search_probe)}-puzzle search probe"
        notes.append(f"no configuration within the budget met the tolerance on {where}")
    return Recommendation(
        checkpoint=checkpoint, budget=budget, tolerance=tolerance, groups=searcher.groups,
        reference_bytes=searcher.ref_footprint.total_bytes, reference_steps=searcher.ref_steps, reference_step_ms=searcher.ref_step_ms,
        search_puzzles=len(searcher.search_probe), probe_puzzles=len(probe), labels=probe.labels is not None,
        sensitivity=sensitivity, points=sorted(points, key=lambda p: p.cost.weight_bytes), finalists=finalists, chosen=chosen,
        verdict=verdict, evaluations=searcher.evaluations, reference_steps_computed=searcher.replay.computed_steps,
        reference_steps_replayed=searcher.replay.replayed_steps, seconds=time.perf_counter() - start, notes=notes)
