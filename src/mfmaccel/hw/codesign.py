"""Co-design, the method's hardware-aware compression: weight bit-widths per block (or per
linear) searched together with the accelerator, on a front of predicted quality, latency,
energy and area.

Bit combinations are never enumerated. compress's sensitivity measures each block's damage at
each bit-width (block tier; the network tier gives the uniform baselines, the module tier each
linear's share); predicted quality is additive, as in `compress.mixed`, whose exact knapsack
gives the best assignment for a byte budget (`codesign_ladder`). The assignments (uniform ones,
the knapsack's along byte budgets, the fewest bytes at each uniform one's quality) are priced
on every design of a `DesignSpace` (`codesign_price`); the front is over (predicted quality,
latency, energy, area). For each uniform assignment's own design front, the record names a
mixed point that dominates it (same design first), or says none does (`codesign_front`);
`checks` mixed front assignments and every uniform one are then quantized for real and
measured on held-out data (`codesign_check`).

Every quality figure, uniform ones included, is the same additive prediction, so the
comparison uses one predictor; the network tier's measurement of each uniform assignment
stands beside it. The hardware model prices weight bits in bytes only (`hw.simulate`: one
int8 x int8 MAC per weight whatever its bits, so fewer bits move and store fewer bytes but
compute no faster); scales and zero points are in the assignment's bytes, not in the GEMMs'.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from mfmaccel.compress.mixed import MixedSearch
from mfmaccel.compress.sensitivity import Sensitivity, measure_sensitivity
from mfmaccel.errors import UserInputError
from mfmaccel.hw.codesign_check import measured_quality
from mfmaccel.hw.codesign_front import joint_front, uniform_front
from mfmaccel.hw.codesign_ladder import TIERS, Ladder
from mfmaccel.hw.codesign_price import admitted, price_table
from mfmaccel.hw.codesign_records import BitAssignment, Codesign
from mfmaccel.hw.codesign_subject import Subject
from mfmaccel.hw.dse import Constraints, DesignSpace
from mfmaccel.parallel import IN_PROCESS, Executor
from mfmaccel.progress import Steps, step
from mfmaccel.runtime.grid import SUPPORTED_BITS, QuantSpec
from mfmaccel.runtime.parts import quantizable_parts
from mfmaccel.runtime.plan import QuantPlan

GROUP_SIZE = 128


def bit_specs(bits: Sequence[int], *, group_size: int | None = GROUP_SIZE,
              symmetric: bool = False) -> list[QuantSpec]:
    """One spec per bit-width (by default groups of 128, asymmetric), refused in one line when
    unusable."""
    chosen = sorted(set(bits))
    wrong = [b for b in chosen if b not in SUPPORTED_BITS]
    if wrong:
        raise UserInputError(f"--weight-bits {wrong[0]} is not a bit-width the quantizer packs; "
                             f"choose from {','.join(map(str, SUPPORTED_BITS))}, e.g. 2,3,4,8")
    if len(chosen) < 2:
        raise UserInputError("--weight-bits needs at least two bit-widths to mix, e.g. 2,3,4,8")
    return [QuantSpec(b, group_size, symmetric) for b in chosen]


def check_settings(bits: Sequence[int], *, steps: int, checks: int,
                   tier: str = "block") -> list[QuantSpec]:
    """The specs of `bits`, once the ladder, its tier and the checks are known to be usable."""
    if tier not in TIERS:
        raise UserInputError(f"--tier {tier}: choose one of {', '.join(TIERS)}")
    if steps < 2 or checks < 3:
        raise UserInputError(f"--steps must be at least 2 and --checks at least 3 (front points "
                             f"checked by measurement), got {steps} and {checks}")
    return bit_specs(bits)


def codesign(subject: Subject, space: DesignSpace, *, bits: Sequence[int] = (2, 3, 4, 8),
             tier: str = "block", steps: int = 12, checks: int = 3,
             executor: Executor = IN_PROCESS,
             constraints: Constraints | None = None, sensitivity: Sensitivity | None = None,
             progress: Steps | None = None) -> Codesign:
    """The co-design front of `subject` over `space` and the assignments `bits` allow, one
    bit-width per block or (`tier` "module") per linear (`sensitivity`: one measured before on
    `subject`'s calibration batches at exactly those bit-widths, with the module tier when
    `tier` asks for it; None: measured here, its probes on `executor` where workers can load
    the subject, `Subject.source`). The pricing table runs on `executor`."""
    specs = check_settings(bits, steps=steps, checks=checks, tier=tier)
    space = replace(space, weight_bits=(max(bits),))  # the assignments give the bits
    started = time.perf_counter()
    if sensitivity is None:
        sensitivity = measure_sensitivity(
            subject.module, subject.calibration, specs, modules_tier=tier == "module",
            progress=step(progress, "sensitivity"), source=subject.source,
            executor=executor if subject.source is not None else IN_PROCESS)
    seconds = {"sensitivity": time.perf_counter() - started}
    parts = {n: p for n, (p, _) in quantizable_parts(subject.module).items()}
    ladder = Ladder(MixedSearch(parts, sensitivity, keep_full=False), tier)
    assignments = ladder.assignments(steps)
    t = time.perf_counter()
    table = price_table(subject.workload, [_layer_bits(ladder, a, subject) for a in assignments],
                        space, executor=executor, progress=step(progress, "pricing"))
    seconds["pricing"] = time.perf_counter() - t
    kept = admitted(table, constraints or Constraints())
    predicted = np.array([a.predicted for a in assignments])
    front = joint_front(assignments, predicted, table, kept, space)
    uniform = [uniform_front(a, assignments, predicted, table, kept, space)
               for a in assignments if a.origin == "uniform"]
    t = time.perf_counter()
    chosen = _to_check(assignments, front, uniform, checks)
    plans = [QuantPlan(ladder.part_labels(a), sensitivity.specs, "rtn") for a in chosen]
    measured = measured_quality(subject.module, subject.heldout, plans, step(progress, "checks"))
    seconds["checks"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    return Codesign(
        model=subject.name, workload=subject.workload.description, signal=sensitivity.signal,
        calibration_tokens=sensitivity.tokens,
        heldout_tokens=sum(int(b.shape[1]) for b in subject.heldout),
        bits=[s.bits for s in specs], tier=tier,
        space={k: v for k, v in asdict(space).items() if k != "weight_bits"},
        designs=space.size, assignments=assignments, front=front, uniform=uniform,
        checks=[{"assignment": a.name, "predicted": a.predicted, "measured": m,
                 "weight_bytes": a.weight_bytes,
                 "on_front": any(p.assignment == a.name for p in front)}
                for a, m in zip(chosen, measured, strict=True)],
        dominance_measured=_dominance_measured(
            uniform, {a.name: m for a, m in zip(chosen, measured, strict=True)}),
        seconds=seconds)


def _dominance_measured(uniform: list[dict], measured: dict[str, float]) -> list[dict]:
    """Each (uniform, mixed dominator) pair whose two assignments were both measured: does
    the mixed one stay at least as good on held-out data?"""
    pairs = dict.fromkeys((u["assignment"], p["dominated_by"]["assignment"]) for u in uniform
                          for p in u["front"] if p["dominated_by"] is not None)
    return [{"uniform": u, "mixed": m, "uniform_measured": measured[u],
             "mixed_measured": measured[m], "holds": measured[m] <= measured[u]}
            for u, m in pairs if u in measured and m in measured]


def _layer_bits(ladder: Ladder, assignment: BitAssignment, subject: Subject) -> dict[str, int]:
    """Module path -> bits of the GEMM that reads each part's weight."""
    return {subject.paths[name]: bits for name, bits in ladder.part_bits(assignment).items()}


def _to_check(assignments, front, uniform, checks: int) -> list[BitAssignment]:
    """Every uniform assignment, then `checks` mixed ones: those that dominate uniform points
    first, then front ones spread over the predicted quality, then (a front holding fewer)
    the others by predicted quality."""
    by_name = {a.name: a for a in assignments}
    wanted = list(dict.fromkeys(p["dominated_by"]["assignment"] for u in uniform
                                for p in u["front"] if p["dominated_by"] is not None))
    on_front = list(dict.fromkeys(p.assignment for p in front
                                  if by_name[p.assignment].origin != "uniform"))
    spread = [on_front[int(i)] for i in np.linspace(0, len(on_front) - 1, checks)
              ] if on_front else []
    others = [a.name for a in sorted(assignments, key=lambda a: a.predicted)
              if a.origin != "uniform"]  # when the front holds too few mixed assignments
    mixed = list(dict.fromkeys(wanted[:checks] + spread + on_front + others))[:checks]
    return [a for a in assignments if a.origin == "uniform"] + [by_name[n] for n in mixed]

