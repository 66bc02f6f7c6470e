"""Our units as design tasks: each reference (our generated unit) passes the golden bench from
`hw.intops`, a wrong design is caught with its mismatching samples, and bad names are refused."""

from __future__ import annotations

import random
import re

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops import int_gemm
from mfmaccel.hw.llm_design.bench import reference_as_candidate
from mfmaccel.hw.llm_design.feedback import feedback_text
from mfmaccel.hw.llm_design.run import select_tasks
from mfmaccel.hw.llm_design.simulate import MISMATCH, PASS, reference_run, simulate
from mfmaccel.hw.llm_design.unit_golden import MacArrayModel
from mfmaccel.hw.llm_design.unit_tasks import NOT_TASKS, UNIT_TASKS, load_unit_tasks, unit_ports
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.fpga import read_ports

from .conftest import needs_icarus, needs_yosys

TRUNCATING_REQUANT = """module TopModule(input signed [31:0] acc, input [30:0] m,
                 input [5:0] shift, output signed [7:0] q);
  wire signed [63:0] p = acc * $signed({1'b0, m});
  wire signed [63:0] r = p >>> shift;  // no rounding term: wrong half the time
  assign q = r > 127 ? 8'sd127 : r < -128 ? -8'sd128 : r[7:0];
endmodule
"""


@pytest.fixture(scope="module")
def tasks():
    return {task.name: task for task in load_unit_tasks()}


@needs_icarus
def test_every_reference_passes_its_golden_bench(tasks):
    for name, task in tasks.items():
        verdict = reference_run(task)
        assert verdict.status == PASS, (name, verdict.detail)
        assert verdict.samples >= 40


@needs_icarus
def test_a_design_without_rounding_is_caught_with_its_samples(tasks):
    task = tasks["requant"]
    verdict = simulate(TRUNCATING_REQUANT, task)
    assert verdict.status == MISMATCH and 0 < verdict.mismatches < verdict.samples
    text = feedback_text(verdict, module=TRUNCATING_REQUANT, task=task)
    found = re.search(r"inputs acc=(-?\d+) m=(\d+) shift=(\d+); q expected (-?\d+), got (-?\d+)",
                      text)
    assert found, text
    acc, m, shift, want, got = map(int, found.groups())
    exact = (acc * m + (1 << (shift - 1) if shift else 0)) >> shift
    assert want == max(-128, min(127, exact)) and got != want


@needs_icarus
def test_a_clocked_design_that_gives_en_priority_over_load_mismatches(tasks):
    task = tasks["mac_array"]
    reference = reference_as_candidate(task)
    load = "else if (load) sum <= wipe ? {ACC_W{1'b0}} : rounded[ACC_W-1:0];"
    add = "else if (en) sum <= sum + {{(ACC_W-2*IN_W){product[2*IN_W-1]}}, product};"
    assert load in reference and add in reference
    swapped = reference.replace(load, "@LOAD@").replace(add, load).replace("@LOAD@", add)
    verdict = simulate(swapped, task)
    assert verdict.status == MISMATCH, verdict.detail
    assert any("acc expected" in line for line in verdict.lines)


def test_the_mac_array_model_ends_each_gemm_where_int_gemm_does():
    cfg = RtlConfig()
    rng = random.Random(3)
    model = MacArrayModel(cfg)
    zeros = {"rst": 0, "a": [0] * cfg.rows, "b": [0] * cfg.cols}
    for k in (1, 5, 12):
        a = [[rng.randint(-128, 127) for _ in range(cfg.rows)] for _ in range(k)]
        b = [[rng.randint(-128, 127) for _ in range(cfg.cols)] for _ in range(k)]
        bias = [rng.randint(-(1 << 30), 1 << 30) for _ in range(cfg.cols)]
        shifts = [rng.randint(0, 20) for _ in range(cfg.rows)]
        model.step(**zeros, load=1, en=0, bias=bias, bias_shift=shifts)
        for column, row in zip(a, b, strict=True):
            acc = model.step(rst=0, load=0, en=1, a=column, b=row, bias=bias,
                             bias_shift=shifts)
        expected = int_gemm(torch.tensor(a).t(), torch.tensor(b).t(), torch.tensor(bias),
                            torch.tensor(shifts)[:, None])
        assert acc == expected.flatten().tolist()


@needs_yosys
def test_spec_ports_are_the_references_ports(tasks, tmp_path):
    for name, task in tasks.items():
        source = tmp_path / f"{name}.v"
        source.write_text(reference_as_candidate(task))
        found = {p.name: (p.output, p.width)
                 for p in read_ports([source], "TopModule", tmp_path)}
        wanted = {p.name: (p.direction == "output", p.width) for p in unit_ports(name)}
        assert found == wanted, name
        for port in unit_ports(name):
            assert f" {port.name}" in task.spec


def test_specs_name_every_constant_and_no_internal_names(tasks):
    for task in tasks.values():
        assert "TopModule" in task.spec and "intops" not in task.spec
        assert "RefModule" not in task.spec
    assert "Q_LN2 = 709" in tasks["iexp"].spec and "Q_LN2 = 709" in tasks["softmax"].spec


def test_unit_names_and_suites_are_checked():
    assert set(UNIT_TASKS) | set(NOT_TASKS) >= {"requant", "gemm", "stream_softmax"}
    assert [t.name for t in select_tasks(task=None, suite="mfmaccel-units",
                                         problems="2")] == list(UNIT_TASKS[:2])
    assert [t.name for t in select_tasks(task="token_shift", suite=None)] == ["token_shift"]
    with pytest.raises(UserInputError, match="not a design task yet"):
        select_tasks(task="gemm", suite=None)
    with pytest.raises(UserInputError, match="unknown unit task 'nope'"):
        select_tasks(task=None, suite="mfmaccel-units", problems="requant,nope")
    with pytest.raises(UserInputError, match="unknown suite"):
        select_tasks(task=None, suite="mfmaccel-unit")
