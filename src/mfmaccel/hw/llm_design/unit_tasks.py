"""Our own units (`hw.rtl`'s catalog) as design tasks: the spec from `unit_specs`, the golden
outputs from `hw.intops` (`unit_golden`), a vector bench (`unit_bench`), and our generated
Verilog as the reference.

Why the reference too: the sandboxed `simulate` first runs the reference against the bench
(our generator must pass its own golden samples, or the task is skipped as `no_reference`),
and the security check proves a candidate equivalent to it. Helper modules of the reference
(the `requant` a LayerNorm instantiates) are renamed under the reference's name, so neither a
candidate's own helpers nor the reference run as a candidate collide with them.

The GEMM engine and the streaming units are not tasks yet: their benches would have to follow
a host protocol or a ready/valid handshake of any latency, where a table of cycles would judge
a correct design by our design's timing. `UNIT_TASKS` names the units that are.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design import unit_golden, unit_specs
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.hw.llm_design.unit_bench import UnitPort, vector_bench
from mfmaccel.hw.llm_design.unit_specs import HEADER, describe_ports, module_header
from mfmaccel.hw.rtl.catalog import DEPENDS, UNITS
from mfmaccel.hw.rtl.config import RtlConfig

SUITE = "mfmaccel-units"
REFERENCE = "RefModule"
SEED = 0
# unit: (spec, golden samples, random cases asked for, clock input or None)
_TASKS: dict[str, tuple[Callable, Callable, int, str | None]] = {
    "requant": (unit_specs.requant, unit_golden.requant_samples, 240, None),
    "iexp": (unit_specs.iexp, unit_golden.iexp_samples, 290, None),
    "igelu": (unit_specs.igelu, unit_golden.igelu_samples, 44, None),
    "softmax": (unit_specs.softmax, unit_golden.softmax_samples, 8 * 60, None),
    "layernorm": (unit_specs.layernorm, unit_golden.layernorm_samples, 8 * 40, None),
    "token_shift": (unit_specs.token_shift, unit_golden.token_shift_samples, 60, None),
    "mac_array": (unit_specs.mac_array, unit_golden.mac_array_samples, 240, "clk"),
}
UNIT_TASKS = tuple(_TASKS)
NOT_TASKS = tuple(name for name in UNITS if name not in _TASKS)


def load_unit_tasks(names: list[str] | None = None, *, cfg: RtlConfig | None = None
                    ) -> list[DesignTask]:
    """The tasks of the named units (default: all of `UNIT_TASKS`), in catalog order."""
    names = list(UNIT_TASKS) if names is None else names
    for name in names:
        if name in NOT_TASKS:
            raise UserInputError(f"unit '{name}' is not a design task yet (its bench would need "
                                 f"a handshake protocol); unit tasks: {', '.join(UNIT_TASKS)}")
        if name not in _TASKS:
            raise UserInputError(f"unknown unit task '{name}'; one of {', '.join(UNIT_TASKS)}")
    return [unit_task(name, cfg or RtlConfig()) for name in names]


def unit_task(name: str, cfg: RtlConfig) -> DesignTask:
    """One unit's task: spec, ports, reference (renamed RefModule) and golden bench."""
    spec_of, samples_of, count, clock = _TASKS[name]
    ports, text = spec_of(cfg)
    spec = (f"{HEADER}{describe_ports(ports)}\n\n{text}\n\nThe module's header, to use as "
            f"it is:\n```verilog\n{module_header(ports)}\n```\n")
    samples = samples_of(cfg, random.Random(SEED), count)
    return DesignTask(name=name, spec=spec, ports=[p.port for p in ports],
                      reference=reference_verilog(name, cfg),
                      testbench=vector_bench(ports, samples, clock=clock),
                      source="mfmaccel", reference_module=REFERENCE)


def unit_ports(name: str, cfg: RtlConfig | None = None) -> list[UnitPort]:
    """The unit task's ports (name, direction, width, signedness, lanes)."""
    return _TASKS[name][0](cfg or RtlConfig())[0]


def reference_verilog(name: str, cfg: RtlConfig) -> str:
    """Our generated unit with its module renamed RefModule and each unit it instantiates
    renamed RefModule_<unit>, all in one text."""
    texts = [UNITS[name](cfg)] + [UNITS[helper](cfg) for helper in DEPENDS.get(name, ())]
    text = "\n".join(texts)
    for helper in DEPENDS.get(name, ()):
        text = re.sub(rf"\b(module\s+){helper}\b", rf"\g<1>{REFERENCE}_{helper}", text)
        text = re.sub(rf"^(\s*){helper}(\s*(?:#|\w+\s*\())", rf"\g<1>{REFERENCE}_{helper}\g<2>",
                      text, flags=re.M)
    return re.sub(rf"\bmodule\s+{name}\b", f"module {REFERENCE}", text)
