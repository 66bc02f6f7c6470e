"""VerilogEval v2's spec-to-RTL problems as `DesignTask`s.

Why here: the benchmark ships as plain files (per problem a prompt, a reference module
`RefModule` and a testbench that prints `Mismatches: N in M samples`), kept outside the
repository at `../shared/data/verilog-eval-v2` (MIT licence, upstream commit c498220). The
loader checks each file's shape once, so a wrong or damaged folder is refused in one line
instead of failing deep inside a simulation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design.task import DesignTask, parse_ports

ENV_VAR = "MFMACCEL_VERILOG_EVAL"
SUBFOLDER = "dataset_spec-to-rtl"
PROBLEMS = 156
REPORT_LINE = '$display("Mismatches: %1d in %1d samples"'
_REPO_ROOT = Path(__file__).resolve().parents[4]
_RELATIVE = Path("..") / "shared" / "data" / "verilog-eval-v2"
_FIX = (f"set {ENV_VAR} to the verilog-eval-v2 folder (the one holding {SUBFOLDER}/), "
        f"or pass its path")


def default_directory() -> Path:
    """$MFMACCEL_VERILOG_EVAL, else ../shared/data/verilog-eval-v2 beside the repository (or
    beside the working directory)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    for base in (_REPO_ROOT, Path.cwd()):
        if (base / _RELATIVE / SUBFOLDER).is_dir():
            return base / _RELATIVE
    return _REPO_ROOT / _RELATIVE


def load_verilog_eval(directory: str | Path | None = None, *, names: list[str] | None = None,
                      complete: bool = True) -> list[DesignTask]:
    """The spec-to-RTL problems, in problem order; `names` keeps those whose name (e.g.
    "Prob004_vector2") or number prefix ("Prob004") is listed, refusing unknown ones.
    `complete=False` accepts a folder holding only some problems (the tests' excerpt)."""
    folder = _problem_folder(Path(directory) if directory is not None else default_directory())
    stems = _problem_stems(folder, complete=complete)
    if names is not None:
        stems = _select(stems, names)
    return [_load_problem(folder, stem) for stem in stems]


def _problem_folder(directory: Path) -> Path:
    folder = directory / SUBFOLDER
    if not folder.is_dir():
        raise UserInputError(f"no VerilogEval v2 data at {directory} ({SUBFOLDER}/ missing); "
                             f"{_FIX}")
    return folder


def _problem_stems(folder: Path, *, complete: bool) -> list[str]:
    stems = sorted(path.name.removesuffix("_prompt.txt") for path in folder.glob("*_prompt.txt"))
    if (len(stems) != PROBLEMS) if complete else not stems:
        raise UserInputError(f"VerilogEval v2 at {folder} has {len(stems)} prompts, not "
                             f"{PROBLEMS}: the copy is incomplete; {_FIX}")
    return stems


def _select(stems: list[str], names: list[str]) -> list[str]:
    chosen = []
    for name in names:
        found = [s for s in stems if s == name or s.split("_", 1)[0] == name]
        if len(found) != 1:
            raise UserInputError(f"unknown VerilogEval problem '{name}'; names look like "
                                 f"{stems[0]} (or its prefix {stems[0].split('_', 1)[0]})")
        chosen.append(found[0])
    return chosen


def _load_problem(folder: Path, stem: str) -> DesignTask:
    """One problem, its three files checked for the shape the harness relies on."""
    texts = {}
    for suffix in ("prompt.txt", "ref.sv", "test.sv"):
        path = folder / f"{stem}_{suffix}"
        try:
            texts[suffix] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserInputError(f"cannot read {path} ({exc.__class__.__name__}); the "
                                 f"VerilogEval copy is damaged; {_FIX}") from None
    reference, bench = texts["ref.sv"], texts["test.sv"]
    problem = _shape_problem(reference, bench)
    if problem:
        raise UserInputError(f"{folder / stem}: {problem}; the VerilogEval copy is damaged; "
                             f"{_FIX}")
    return DesignTask(name=stem, spec=texts["prompt.txt"].strip(),
                      ports=parse_ports(reference, "RefModule"), reference=reference,
                      testbench=bench, source="verilog-eval-v2")


def _shape_problem(reference: str, bench: str) -> str:
    """What is wrong with a problem's files, or "" when they have the expected shape."""
    if not re.search(r"\bmodule\s+RefModule\b", reference):
        return "the reference defines no module RefModule"
    try:
        parse_ports(reference, "RefModule")
    except ValueError as exc:
        return f"the reference's header cannot be read ({exc})"
    if not re.search(r"\bmodule\s+tb\b", bench) or "TopModule" not in bench:
        return "the testbench has no module tb instantiating TopModule"
    if bench.count(REPORT_LINE) != 1:
        return "the testbench has no single 'Mismatches: N in M samples' report line"
    return ""
