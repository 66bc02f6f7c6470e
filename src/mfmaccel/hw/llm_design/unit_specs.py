"""The prose specification and the ports of each of our units as a design task.

Why written out here: a unit's docstring names `hw.intops` functions a model cannot see, so
each spec says the same thing in arithmetic a designer can implement from the text alone (every
constant, width, rounding and saturation), in VerilogEval v2's prompt style. The ports are
built from the same `RtlConfig` as the unit, so spec, bench and reference agree.
"""

from __future__ import annotations

from mfmaccel.hw.intops import IExp, IGelu
from mfmaccel.hw.intops.activations import MAX_EXP_SHIFT
from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_BITS, NORM_INPUT
from mfmaccel.hw.llm_design.unit_bench import UnitPort
from mfmaccel.hw.rtl.config import RtlConfig

HEADER = ("I would like you to implement a module named TopModule with the following "
          "interface. All input and output ports are one bit unless otherwise specified.\n\n")
COMBINATIONAL = "The module is purely combinational (no clock, no registers)."
LANES_NOTE = ("A port of several values packs them side by side: value i occupies bits "
              "[i*W+W-1 : i*W] (value 0 at the lowest bits), W being the width of one value.")


def module_header(ports: list[UnitPort]) -> str:
    """The ANSI module header the design must use, as Verilog: small models otherwise copy
    the prose interface ("input acc (32 bits, signed)") into their header."""
    lines = []
    for port in ports:
        kind = " signed" if port.signed and port.lanes == 1 else ""
        width = f" [{port.width - 1}:0]" if port.width > 1 else ""
        lines.append(f"    {port.direction} wire{kind}{width} {port.name}")
    return "module TopModule (\n" + ",\n".join(lines) + "\n);"


def describe_ports(ports: list[UnitPort]) -> str:
    """VerilogEval's interface list: " - input  acc (32 bits, signed)"."""
    lines = []
    for port in ports:
        parts = []
        if port.lanes > 1:
            parts.append(f"{port.lanes} values of {port.width // port.lanes} bits, "
                         f"{port.width} bits in all")
        elif port.width > 1:
            parts.append(f"{port.width} bits")
        if port.signed:
            parts.append("each signed" if port.lanes > 1 else "signed")
        detail = f" ({', '.join(parts)})" if parts else ""
        lines.append(f" - {port.direction:<6} {port.name}{detail}")
    return "\n".join(lines)


def requant(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    ports = [UnitPort("acc", "input", cfg.acc_bits, signed=True),
             UnitPort("m", "input", cfg.multiplier_bits),
             UnitPort("shift", "input", cfg.shift_bits),
             UnitPort("q", "output", cfg.out_bits, signed=True)]
    top = (1 << (cfg.out_bits - 1)) - 1
    text = (f"The module requantizes a signed {cfg.acc_bits}-bit accumulator to a signed "
            f"{cfg.out_bits}-bit value by the dyadic factor m / 2^shift (m unsigned): "
            "q = saturate((acc * m + r) >> shift), where r = 2^(shift-1) when shift > 0 and "
            "r = 0 when shift = 0 (rounding half up). The product and the sum are exact "
            "(compute them wide enough that nothing overflows), >> is an arithmetic shift "
            f"(rounds toward minus infinity), and saturate clamps to [{-top - 1}, {top}].\n"
            f"{COMBINATIONAL}")
    return ports, text


def iexp(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    unit = IExp.build(cfg.exp_input_scale)
    ports = [UnitPort("q", "input", cfg.acc_bits, signed=True),
             UnitPort("out", "output", 32)]
    text = (f"The module computes an integer approximation of exp(q * {cfg.exp_input_scale!r}) "
            "for q <= 0 (I-BERT's i-exp; inputs q > 0 never occur). With the constants "
            f"Q_LN2 = {unit.q_ln2}, Q_B = {unit.q_b} and Q_C = {unit.q_c}:\n"
            " - z = floor(-q / Q_LN2) (integer division of the non-negative -q)\n"
            " - p = q + z * Q_LN2 (so -Q_LN2 < p <= 0)\n"
            f" - out = ((p + Q_B)^2 + Q_C) >> min(z, {MAX_EXP_SHIFT})\n"
            "All arithmetic is exact (wide enough not to overflow); out is unsigned and always "
            f"fits 32 bits.\n{COMBINATIONAL}")
    return ports, text


def igelu(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    unit = IGelu.build(cfg.gelu_input_scale)
    ports = [UnitPort("q", "input", cfg.in_bits, signed=True),
             UnitPort("out", "output", 32, signed=True),
             UnitPort("overflow", "output", 1)]
    text = ("The module computes I-BERT's integer GELU of q at the input scale "
            f"{cfg.gelu_input_scale!r}. With the constants Q_B = {unit.q_b} and "
            f"Q_C = {unit.q_c} (both negative):\n"
            f" - c = min(|q|, {-unit.q_b})\n"
            " - erf = sign(q) * ((c + Q_B)^2 + Q_C), where sign(q) is -1, 0 or 1\n"
            " - result = -q * (erf + Q_C)\n"
            "All arithmetic is exact and signed. out is result as a signed 32-bit value; "
            "overflow is 1 when result lies outside the signed 32-bit range and 0 otherwise "
            f"(then out is not checked).\n{COMBINATIONAL}")
    return ports, text


def softmax(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    unit = IExp.build(cfg.exp_input_scale)
    lanes, out_w = cfg.softmax_len, cfg.softmax_bits
    ports = [UnitPort("q", "input", lanes * cfg.acc_bits, signed=True, lanes=lanes),
             UnitPort("p", "output", lanes * out_w, lanes=lanes)]
    text = (f"The module computes an integer softmax over a row of {lanes} signed "
            f"{cfg.acc_bits}-bit scores q[0..{lanes - 1}], giving {lanes} unsigned {out_w}-bit "
            "probabilities p[i]:\n"
            " - mx = the largest q[i]\n"
            " - e[i] = iexp(q[i] - mx), where for x <= 0: z = floor(-x / Q_LN2), "
            f"w = x + z * Q_LN2, iexp(x) = ((w + Q_B)^2 + Q_C) >> min(z, {MAX_EXP_SHIFT}), "
            f"with Q_LN2 = {unit.q_ln2}, Q_B = {unit.q_b}, Q_C = {unit.q_c} (q[i] - mx needs "
            f"{cfg.acc_bits + 1} bits; each e[i] fits 32 bits unsigned)\n"
            " - s = e[0] + ... + e[n-1], exact\n"
            f" - p[i] = min(floor(e[i] * 2^{out_w} / s), {(1 << out_w) - 1})\n"
            f"All arithmetic is exact. {LANES_NOTE}\n{COMBINATIONAL}")
    return ports, text


def layernorm(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    lanes, in_w, out_w = cfg.norm_len, NORM_INPUT.bits, cfg.out_bits
    ports = [UnitPort("q", "input", lanes * in_w, signed=True, lanes=lanes),
             UnitPort("gamma", "input", lanes * GAMMA_BITS, signed=True, lanes=lanes),
             UnitPort("beta", "input", lanes * 32, signed=True, lanes=lanes),
             UnitPort("eps", "input", 32),
             UnitPort("rq_m", "input", cfg.multiplier_bits),
             UnitPort("rq_shift", "input", cfg.shift_bits),
             UnitPort("out", "output", lanes * out_w, signed=True, lanes=lanes)]
    shift = 31 - NORM_BITS
    top = (1 << (out_w - 1)) - 1
    text = (f"The module computes an integer LayerNorm of a row of {lanes} signed {in_w}-bit "
            f"values q[0..{lanes - 1}] with per-value gamma[i] (signed {GAMMA_BITS} bits) and "
            "beta[i] (signed 32 bits), epsilon eps (unsigned) and an output factor "
            "rq_m / 2^rq_shift (rq_m unsigned), giving signed "
            f"{out_w}-bit outputs out[i]:\n"
            f" - mean = floor((q[0] + ... + q[{lanes - 1}] + {lanes // 2}) / {lanes}) "
            "(floor also for negative sums)\n"
            " - y[i] = q[i] - mean\n"
            f" - var = floor((y[0]^2 + ... + y[{lanes - 1}]^2) / {lanes}) + eps\n"
            " - std = max(1, floor(sqrt(var))) (the exact integer square root)\n"
            " - f = floor(2^31 / std)\n"
            f" - n[i] = (y[i] * f + 2^{shift - 1}) >> {shift} (arithmetic shift)\n"
            " - a[i] = n[i] * gamma[i] + beta[i]\n"
            " - out[i] = saturate((a[i] * rq_m + r) >> rq_shift), r = 2^(rq_shift-1) when "
            f"rq_shift > 0 and 0 otherwise, saturate clamping to [{-top - 1}, {top}]\n"
            f"All arithmetic is exact and signed (use wide intermediates). {LANES_NOTE}\n"
            f"{COMBINATIONAL}")
    return ports, text


def token_shift(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    lanes, out_w = cfg.token_len, cfg.out_bits
    ports = [UnitPort("x", "input", lanes * cfg.acc_bits, signed=True, lanes=lanes),
             UnitPort("q", "output", lanes * out_w, signed=True, lanes=lanes),
             UnitPort("shift", "output", cfg.shift_bits)]
    top = (1 << (out_w - 1)) - 1
    text = (f"The module scales a row of {lanes} signed {cfg.acc_bits}-bit values "
            f"x[0..{lanes - 1}] by a power of two so that they fit signed {out_w} bits:\n"
            " - largest = max(1, |x[0]|, ..., |x[n-1]|) (|x| of the most negative value is "
            f"2^{cfg.acc_bits - 1})\n"
            " - bits = the bit length of largest (the position of its highest set bit, plus 1)\n"
            f" - shift = max(0, bits - {out_w - 1})\n"
            " - q[i] = saturate((x[i] + r) >> shift), r = 2^(shift-1) when shift > 0 and 0 "
            f"otherwise, >> arithmetic, saturate clamping to [{-top - 1}, {top}]\n"
            f"{LANES_NOTE}\n{COMBINATIONAL}")
    return ports, text


def mac_array(cfg: RtlConfig) -> tuple[list[UnitPort], str]:
    rows, cols = cfg.rows, cfg.cols
    acc_w = cfg.acc_bits
    ports = [UnitPort("clk", "input", 1), UnitPort("rst", "input", 1),
             UnitPort("load", "input", 1), UnitPort("en", "input", 1),
             UnitPort("a", "input", rows * cfg.in_bits, signed=True, lanes=rows),
             UnitPort("b", "input", cols * cfg.in_bits, signed=True, lanes=cols),
             UnitPort("bias", "input", cols * acc_w, signed=True, lanes=cols),
             UnitPort("bias_shift", "input", rows * cfg.shift_bits, lanes=rows),
             UnitPort("acc", "output", rows * cols * acc_w, signed=True, lanes=rows * cols)]
    text = (f"The module is an output-stationary {rows} x {cols} array of multiply-accumulate "
            f"cells holding signed {acc_w}-bit accumulators acc[i][j] (i: row 0..{rows - 1}, "
            f"j: column 0..{cols - 1}). Each cycle it can add the outer product of a column a "
            f"(a[i], signed {cfg.in_bits} bits) and a row b (b[j], signed {cfg.in_bits} bits) "
            "to every accumulator. On each rising edge of clk (synchronous, active-high rst):\n"
            " - if rst: every acc[i][j] becomes 0\n"
            " - else if load: acc[i][j] becomes (bias[j] + r) >> s, where s = bias_shift[i] "
            "(unsigned), r = 2^(s-1) when s > 0 and 0 otherwise, computed exactly with an "
            f"arithmetic shift (the result always fits {acc_w} bits; it is 0 when s >= "
            f"{acc_w})\n"
            " - else if en: acc[i][j] becomes acc[i][j] + a[i] * b[j], wrapping modulo "
            f"2^{acc_w}\n"
            " - otherwise every acc[i][j] keeps its value.\n"
            f"The output acc is every accumulator, acc[i][j] at position i*{cols}+j "
            f"(bits [(i*{cols}+j)*{acc_w}+{acc_w - 1} : (i*{cols}+j)*{acc_w}]), driven straight "
            f"from the registers. {LANES_NOTE}")
    return ports, text
