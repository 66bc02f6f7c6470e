"""Formal equivalence of a candidate with the task's reference, with yosys's own passes.

Why: simulation tries ~100 random samples, so a design that differs only on one input value in
2^16 (a trojan's trigger) passes it. A miter of reference and candidate, handed to yosys's SAT
solver, looks at every input value instead. SymbiYosys is not available; `miter` and `sat` are.

What is proven. Both designs are elaborated in separate yosys processes (so a candidate may
define any helper module, even one named like the reference's) and flattened; the miter's
`trigger` is 1 when an output bit differs where the reference's bit is defined (`-ignore_gold_x`,
as VerilogEval's bench ignores x in the reference). Inputs are defined; x is modelled as in
simulation (`-enable_undef`), and every register starts as x unless an `initial` value is given,
as under Icarus. Then:

- no flip-flop or latch (combinational): one SAT call, a proof for every input value;
- flip-flops on one clock input and one edge (`async2sync` models asynchronous resets): a bounded
  proof, "no input sequence of up to `steps` clock cycles from power-up makes an output differ",
  and, when temporal induction of length `INDUCTION_STEPS` also succeeds, a proof for every
  reachable state (`proof="induction"`);
- anything else (two edges, two clocks, a derived clock, latches): `clk2fflogic`, where a step is
  a half cycle, so the same bound in solver steps covers `steps / 2` clock cycles.

Statuses: `equivalent`, `not_equivalent` (the counterexample's inputs, or the interfaces
differ), `unknown` (the SAT solver's or the sandbox's time limit, or yosys cannot read one of
the two designs: an unsupported construct, the reference's error included), `refused` (the
screen). Everything runs in the sandbox like `tools.synthesize`: a run to elaborate, one for the
bounded proof and, for sequential designs it holds for, one for the induction, each within
`limits`.
"""

from __future__ import annotations

import dataclasses
import json
import re

from mfmaccel.evaluate.sandbox import SandboxLimits
from mfmaccel.hw.llm_design.bench import CANDIDATE_FILE, REFERENCE_FILE
from mfmaccel.hw.llm_design.sandboxed import ToolRun, run_tools, tool_path
from mfmaccel.hw.llm_design.screen import TOP, screen
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.hw.llm_design.tools import DEFAULT_LIMITS  # a yosys run's limits
from mfmaccel.records import Record

EQUIVALENT, NOT_EQUIVALENT, UNKNOWN, REFUSED = (
    "equivalent", "not_equivalent", "unknown", "refused")
COMBINATIONAL, INDUCTION, BOUNDED = "combinational", "induction", "bounded"
STEPS = 20  # solver steps of the bounded proof: clock cycles, or half cycles under clk2fflogic
INDUCTION_STEPS = 3
SAT_TIMEOUT = 20  # seconds for one SAT call of the bounded proof
_SAT = "-prove trigger 0 -set-init-undef -set-def-inputs -enable_undef"
INDUCTION_TIMEOUT = 5
MAX_CEX_STEPS = 8  # the counterexample's last steps kept
_ALWAYS_COMB_LATCH = "from always_comb process"
# `stat` lines ("     $dff     2"): cells that hold state, and those async2sync cannot model as
# one step per clock edge (latches, set-reset and async-load flip-flops)
_STATE_CELLS = re.compile(r"^\s+\$(?:\w*dff\w*|\w*dlatch\w*|ff|sr)\s+(\d+)\s*$", re.M)
_LATCH_CELLS = re.compile(r"^\s+\$(?:\w*dlatch\w*|sr|aldff\w*|dffsr\w*)\s+\d+\s*$", re.M)


@dataclasses.dataclass
class EquivalenceReport(Record):
    """The verdict: `status`, how far it reaches (`proof`: combinational, induction or bounded,
    with `steps` solver steps and `clocking`), the `counterexample` (one line per step, its
    input values) and `detail`, one line saying why."""

    status: str
    proof: str = ""
    steps: int = 0
    clocking: str = ""
    counterexample: list[str] = dataclasses.field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    @property
    def equivalent(self) -> bool:
        return self.status == EQUIVALENT


def check_equivalence(candidate: str, task: DesignTask, *, limits: SandboxLimits | None = None,
                      steps: int = STEPS) -> EquivalenceReport:
    """Whether `candidate`'s TopModule behaves as the task's reference (see the module's
    docstring for what is proven)."""
    if refusal := screen(candidate):
        return EquivalenceReport(REFUSED, detail=refusal)
    limits = limits or DEFAULT_LIMITS
    files = {CANDIDATE_FILE: candidate, REFERENCE_FILE: task.reference}
    design = _Design(task.reference_module)
    run = _elaborate(files, design, limits)
    if isinstance(run, EquivalenceReport):
        return run
    design.read_info(run.steps[-1].text)
    report = _judge_proof(run_tools(files, design.proof_steps(steps), limits), design)
    report.seconds += run.seconds
    if report.proof == BOUNDED:
        steps_run = design.induction_steps()
        induction = run_tools(files, steps_run, limits)
        if _failed_step(induction, expected=len(steps_run)) is None:
            report.proof = INDUCTION
        report.seconds += induction.seconds
    return report


@dataclasses.dataclass
class _Design:
    """What the yosys scripts need: the reference's module name, whether a design needs
    `-nolatches` (yosys refuses an always_comb that infers a latch), and the miter's state."""

    reference_module: str
    gate_nolatches: bool = False
    gold_nolatches: bool = False
    state_cells: int = 0
    clocking: str = "single"
    clocks: tuple[str, ...] = ()

    def prepare_steps(self) -> list[list[str]]:
        """Candidate and reference each elaborated alone, then the miter."""
        return [_yosys(_prepare(CANDIDATE_FILE, TOP, "gate", self.gate_nolatches)),
                _yosys(_prepare(REFERENCE_FILE, self.reference_module, "gold",
                                self.gold_nolatches)),
                _yosys("read_rtlil gold.il; read_rtlil gate.il; "
                       "miter -equiv -flatten -make_outputs -ignore_gold_x gold gate miter; "
                       "hierarchy -top miter; opt_clean; write_rtlil miter.il")]

    def info_steps(self) -> list[list[str]]:
        """The miter's cells by type, its clock wires and negative-edge cells, in info.txt."""
        script = ("read_rtlil miter.il; tee -q -o info.txt stat; "
                  "tee -q -a info.txt log CLOCKS; "
                  "tee -q -a info.txt select -list miter/t:* %x:+[CLK] miter/t:* %d; "
                  "tee -q -a info.txt log NEGEDGE; "
                  "tee -q -a info.txt select -list miter/r:CLK_POLARITY=1'0; "
                  "tee -q -a info.txt log POSEDGE; "
                  "tee -q -a info.txt select -list miter/r:CLK_POLARITY=1'1")
        return [_yosys(script), [tool_path("cat"), "info.txt"]]

    def read_info(self, text: str) -> None:
        """Choose the clocking from the miter's cells: none (no state), single (one clock
        input, one edge, no latch) or clk2fflogic (anything else, modelled exactly)."""
        stat, _, rest = text.partition("CLOCKS")
        clocks, _, rest = rest.partition("NEGEDGE")
        negedge, _, posedge = rest.partition("POSEDGE")
        self.state_cells = sum(int(n) for n in _STATE_CELLS.findall(stat))
        self.clocks = tuple(sorted({line.strip().split("/", 1)[1] for line in
                                    clocks.splitlines() if line.strip().startswith("miter/")}))
        one_edge = "miter/" not in negedge or "miter/" not in posedge
        if self.state_cells == 0:
            self.clocking = "none"
        elif (len(self.clocks) == 1 and self.clocks[0].startswith("in_") and one_edge
              and not _LATCH_CELLS.search(stat)):
            self.clocking = "single"
        else:
            self.clocking = "clk2fflogic"

    def proof_steps(self, steps: int) -> list[list[str]]:
        """Elaborate again, then the bounded proof (its log on stdout too, so a run cut short
        still says how far it got), its summary lines and the counterexample."""
        depth = 1 if self.clocking == "none" else steps
        script = (f"{self._miter_model()}; tee -o base.txt sat -tempinduct-baseonly {_SAT} "
                  f"-maxsteps {depth} -timeout {SAT_TIMEOUT} -dump_json cex.json miter")
        summary = r"^\[base case|Reached maximum|model found|TIMEOUT"
        return [*self.prepare_steps(), [tool_path("yosys"), "-Q", "-p", script],
                [tool_path("grep"), "-E", summary, "base.txt"], [tool_path("cat"), "cex.json"]]

    def induction_steps(self) -> list[list[str]]:
        """Elaborate again, then temporal induction; its last step fails unless proven."""
        script = (f"{self._miter_model()}; tee -q -o induct.txt sat -tempinduct-inductonly "
                  f"{_SAT} -maxsteps {INDUCTION_STEPS} -timeout {INDUCTION_TIMEOUT} miter")
        return [*self.prepare_steps(), _yosys(script),
                [tool_path("grep"), "Induction step proven", "induct.txt"]]

    def _miter_model(self) -> str:
        """The miter read back with its clocking modelled. opt_merge shares the logic both
        designs compute alike (sound: equal cells on equal inputs; flip-flops with different
        initial values stay apart)."""
        model = {"none": "", "single": "async2sync; ", "clk2fflogic": "clk2fflogic; "}
        return f"read_rtlil miter.il; {model[self.clocking]}opt_merge; opt_clean"


def _yosys(script: str) -> list[str]:
    return [tool_path("yosys"), "-Q", "-q", "-p", script]


def _prepare(file: str, module: str, name: str, nolatches: bool) -> str:
    """One design read, flattened (its helpers folded in and dropped) and saved as `name`."""
    flags = "-sv -nolatches" if nolatches else "-sv"
    return (f"read_verilog {flags} {file}; hierarchy -top {module}; proc; flatten; "
            f"hierarchy -top {module}; memory; opt_clean; rename {module} {name}; "
            f"write_rtlil {name}.il")


def _elaborate(files: dict[str, str], design: _Design,
               limits: SandboxLimits) -> ToolRun | EquivalenceReport:
    """The miter built and its state read; a design yosys cannot read is a report.

    yosys refuses an always_comb that infers a latch; such a design is read again with
    -nolatches, where the held value becomes x. In the candidate that can only add differences
    (x differs from any defined reference value; the lint names the latch). In the reference
    it leaves the candidate free wherever the latch would hold: in VerilogEval's six such FSMs
    that is the unused state codes of a `case` without `default`, unreachable from reset."""
    while True:
        steps = design.prepare_steps() + design.info_steps()
        run = run_tools(files, steps, limits)
        failed = _failed_step(run, expected=len(steps))
        if failed is None:
            return run
        text = run.steps[failed].text if failed < len(run.steps) else ""
        if failed == 0 and _ALWAYS_COMB_LATCH in text and not design.gate_nolatches:
            design.gate_nolatches = True
        elif failed == 1 and _ALWAYS_COMB_LATCH in text and not design.gold_nolatches:
            design.gold_nolatches = True
        else:
            return _elaboration_failure(run, failed, text)


def _failed_step(run: ToolRun, *, expected: int) -> int | None:
    """Index of the step that failed or never ran; None when all `expected` ran and passed."""
    for index, step in enumerate(run.steps):
        if step.timed_out or step.returncode != 0:
            return index
    return None if len(run.steps) == expected else len(run.steps)


def _elaboration_failure(run: ToolRun, failed: int, text: str) -> EquivalenceReport:
    """Why the miter could not be built: the interfaces differ (not equivalent), or a design
    yosys cannot read, or a time limit (unknown)."""
    if not run.completed or (failed < len(run.steps) and run.steps[failed].timed_out):
        return EquivalenceReport(UNKNOWN, detail=f"timed out building the miter "
                                 f"({run.sandbox_detail or run.sandbox_status})",
                                 seconds=run.seconds)
    error = _first_error(text)
    if failed == 2 and "No matching port" in error:
        port = re.search(r"for \\(\S+?)!", error)
        side = "the reference has no" if "in gold" in error else "the candidate has no"
        return EquivalenceReport(NOT_EQUIVALENT, detail=f"interfaces differ: {side} port "
                                 f"{port.group(1) if port else '?'}", seconds=run.seconds)
    who = {0: "candidate", 1: "reference"}.get(failed, "miter")
    return EquivalenceReport(UNKNOWN, detail=f"yosys cannot read the {who}: {error}",
                             seconds=run.seconds)


def _first_error(text: str) -> str:
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line]
    if errors:
        return errors[0][:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _judge_proof(run: ToolRun, design: _Design) -> EquivalenceReport:
    """The bounded proof's verdict, read off its log (step 3), its summary lines (step 4) and
    the counterexample (step 5)."""
    report = EquivalenceReport(UNKNOWN, clocking=design.clocking, seconds=run.seconds)
    if len(run.steps) < 4:
        report.detail = f"the proof did not start ({run.sandbox_detail or run.sandbox_status})"
        return report
    proof = run.steps[3]
    if proof.timed_out or not run.completed:
        return _undecided(report, _last_step(proof.text), "the time limit came")
    if proof.returncode != 0 or len(run.steps) < 5:
        report.detail = f"yosys failed in the proof: {_first_error(proof.text)}"
        return report
    base = run.steps[4].text.splitlines()
    reached = _last_step(run.steps[4].text)
    if any("model found for base case" in line for line in base):
        report.status, report.steps = NOT_EQUIVALENT, reached
        report.detail = f"the outputs differ at step {reached}"
        clocks = design.clocks if design.clocking == "single" else ()
        report.counterexample = counterexample(run.steps[5].text if len(run.steps) > 5 else "",
                                               reached, skip=clocks)
    elif any("TIMEOUT" in line for line in base):
        _undecided(report, reached, f"the SAT solver passed {SAT_TIMEOUT} s")
    elif any("Reached maximum" in line for line in base):
        report.status, report.steps = EQUIVALENT, reached
        report.proof = COMBINATIONAL if design.clocking == "none" else BOUNDED
    else:
        report.detail = "the SAT pass printed no verdict"
    return report


def _undecided(report: EquivalenceReport, reached: int, why: str) -> EquivalenceReport:
    """Unknown, with how far the bounded proof got before `why`."""
    report.steps = max(0, reached - 1)
    report.detail = f"{why} at step {reached}; no difference within {report.steps} steps"
    return report


def _last_step(text: str) -> int:
    found = re.findall(r"\[base case (\d+)\]", text)
    return int(found[-1]) if found else 0


def counterexample(wavejson: str, steps: int, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The inputs of yosys's WaveJSON model of a `steps`-step difference, one line per step
    ("3: load=1 data=10'h003"), the last `MAX_CEX_STEPS` of them; `skip` drops inputs (the
    clock, when a step is a cycle). A model with state has an extra first column, the initial
    state, so the steps are counted from the end."""
    try:
        signals = json.loads(wavejson)["signal"]
    except (ValueError, KeyError, TypeError):
        return []
    columns = {signal["name"][3:]: _wave_values(signal.get("wave", ""), signal.get("data", []))
               for signal in signals if signal.get("name", "").startswith("in_")
               and signal["name"] not in skip}
    lines = []
    for step in range(1, steps + 1):
        values = [f"{name}={wave[len(wave) - steps + step - 1]}"
                  for name, wave in columns.items() if len(wave) >= steps]
        lines.append(f"{step}: " + " ".join(values))
    return [line[:200] for line in lines[-MAX_CEX_STEPS:]]


def _wave_values(wave: str, data: list[str]) -> list[str]:
    """yosys's WaveJSON characters per time step: '.' repeats the previous value, '=' takes
    the next data word, '4' (no value at this step, an empty data word) is x; a 1-bit signal
    writes its bit itself."""
    values, previous, words = [], "x", iter(data)
    for char in wave:
        if char == ".":
            value = previous
        elif char in "=4":
            value = _word(next(words, ""))
        else:
            value = char if char in "01" else "x"
        values.append(value)
        previous = value
    return values


def _word(bits: str) -> str:
    """A binary word as Verilog hex ("10'h003"), or as bits when some are x."""
    if not bits or not re.fullmatch(r"[01]+", bits):
        return f"{len(bits)}'b{bits}" if bits else "x"
    return f"{len(bits)}'h{int(bits, 2):0{(len(bits) + 3) // 4}x}"
