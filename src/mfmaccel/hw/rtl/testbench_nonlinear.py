"""cocotb testbenches of i-GELU, the integer softmax (`hw.rtl.nonlinear`) and LayerNorm
(`hw.rtl.norm`) against `intops.IGelu`, `intops.i_softmax` and `intops.ILayerNorm`, bit for
bit."""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import Timer

from mfmaccel.hw.intops import (
    Dyadic,
    IExp,
    IGelu,
    ILayerNorm,
    IntRange,
    i_softmax,
)
from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_INPUT
from mfmaccel.hw.rtl.cases import igelu_golden, igelu_inputs, layernorm_cases, softmax_rows
from mfmaccel.hw.rtl.signals import (
    SEED,
    VECTORS,
    config_from_env,
    pack,
    unpack_signed,
    unpack_unsigned,
)


@cocotb.test()
async def igelu_matches_golden(dut) -> None:
    cfg = config_from_env()
    unit = IGelu.build(cfg.gelu_input_scale)
    for q in igelu_inputs(cfg, random.Random(SEED), VECTORS):  # every input, then repeats
        dut.q.value = q
        await Timer(1, unit="ns")
        want = igelu_golden(unit, q)
        if want is None:
            assert int(dut.overflow.value) == 1, f"q={q}: int32 overflow not flagged"
        else:
            got = dut.out.value.to_signed()
            assert not int(dut.overflow.value) and got == want, f"q={q}: rtl {got}, golden {want}"


@cocotb.test()
async def softmax_matches_golden(dut) -> None:
    cfg = config_from_env()
    exp = IExp.build(cfg.exp_input_scale)
    for row in softmax_rows(cfg, random.Random(SEED), VECTORS):
        dut.q.value = pack(row, cfg.acc_bits)
        await Timer(1, unit="ns")
        want = i_softmax(torch.tensor([row]), exp, cfg.softmax_bits)[0].tolist()
        got = unpack_unsigned(dut.p.value.to_unsigned(), cfg.softmax_len, cfg.softmax_bits)
        assert got == want, f"row {row}: rtl {got}, golden {want}"


@cocotb.test()
async def layernorm_matches_golden(dut) -> None:
    cfg = config_from_env()
    for row, gamma, beta, eps, m, shift in layernorm_cases(cfg, random.Random(SEED), VECTORS):
        dut.q.value = pack(row, NORM_INPUT.bits)
        dut.gamma.value = pack(gamma, GAMMA_BITS)
        dut.beta.value = pack(beta, 32)
        dut.eps.value, dut.rq_m.value, dut.rq_shift.value = eps, m, shift
        await Timer(1, unit="ns")
        golden = ILayerNorm(torch.tensor(gamma), torch.tensor(beta), eps, Dyadic(m, shift),
                            IntRange(cfg.out_bits))
        want = golden(torch.tensor([row]))[0].tolist()
        got = unpack_signed(dut.out.value.to_unsigned(), cfg.norm_len, cfg.out_bits)
        assert got == want, f"row {row} gamma {gamma} eps {eps}: rtl {got}, golden {want}"
