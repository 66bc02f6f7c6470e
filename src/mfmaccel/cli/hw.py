"""`mfmaccel hw ...`: integer-only execution (`hw.intexec`), the RTL (`hw.rtl`), the
performance model (`hw.simulate`) and its design-space exploration (`hw.dse`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mfmaccel.cli.options import Scheduler, Workers
from mfmaccel.cli.root import (
    Bars,
    console,
    hw_app,
    print_record,
    quiet_libraries,
    say,
    user_errors,
)
from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import ArchPreset, Attention

# The design grid's flags, shared by `hw dse` and `hw codesign`: comma lists of values to try.
GridRows = Annotated[str | None, typer.Option(help="Array rows to try, e.g. 8,16,32")]
GridCols = Annotated[str | None, typer.Option(help="Array columns to try")]
GridABuffer = Annotated[str | None, typer.Option(help="A buffer sizes (KiB)")]
GridBBuffer = Annotated[str | None, typer.Option(help="B buffer sizes (KiB)")]
GridOutBuffer = Annotated[str | None, typer.Option(help="Output buffer sizes (KiB)")]
GridBandwidth = Annotated[str | None, typer.Option(help="Off-chip GB/s to try")]
GridClock = Annotated[str | None, typer.Option(help="Clocks to try (MHz)")]
GridLanes = Annotated[str | None, typer.Option(help="Non-linear unit lanes")]


@hw_app.command("intexec")
@user_errors
def hw_intexec(
    model: Annotated[str, typer.Option(
        help="A BERT-family encoder (minilm-l6), a Llama-family decoder (smollm2-135m) or "
             "medvlm (its vision tower runs integer-only)")],
    sentences: Annotated[int, typer.Option(help="Encoder: test paragraphs to compare on")] = 128,
    calibration: Annotated[int, typer.Option(
        help="Encoder: train paragraphs to calibrate on; VLM: train images")] = 64,
    questions: Annotated[int, typer.Option(
        help="VLM: medical VQA test questions (type-balanced subset; 0: all)")] = 0,
    tokens: Annotated[int, typer.Option(help="Decoder: test tokens to score")] = 2048,
    calibration_tokens: Annotated[int, typer.Option(help="Decoder: train tokens")] = 2048,
    context: Annotated[int, typer.Option(help="Decoder: window length")] = 256,
    per_token: Annotated[bool, typer.Option(help="Per-token power-of-two scales for the GEMM "
                                            "inputs (else static per-tensor)")] = True,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Run MODEL integer-only and report how close it stays to float."""
    quiet_libraries()
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.hw.intexec.agreement import agreement_for_spec

    out = out or Path("results") / f"{Path(model).name}-intexec.json"
    check_replaceable_file(out)  # refuse a user's file before minutes of compute
    with Bars() as bars:
        record = agreement_for_spec(
            model, sentences=sentences, calibration=calibration, questions=questions,
            tokens=tokens, calibration_tokens=calibration_tokens, context=context,
            per_token=per_token, progress=bars.task)
    record.save(out)
    print_record(f"integer-only {model} vs float", record.to_dict())
    say(f"wrote {out}")


@hw_app.command("rtl")
@user_errors
def hw_rtl(
    out: Annotated[Path, typer.Option(help="Folder for the Verilog and its test runner")],
    rows: Annotated[int, typer.Option(help="MAC array rows")] = 8,
    cols: Annotated[int, typer.Option(help="MAC array columns")] = 8,
    synth: Annotated[bool, typer.Option(help="Also count cells with yosys (area proxy)")] = False,
) -> None:
    """Write the accelerator's Verilog units (and run_tests.py, their cocotb testbenches)."""
    from mfmaccel.hw.rtl.catalog import STREAMING
    from mfmaccel.hw.rtl.config import RtlConfig
    from mfmaccel.hw.rtl.verify import synthesis_cells, write_rtl

    def cells(source: Path) -> list[str]:
        if not synth:
            return []
        return ["- (row buffer in flip-flops)" if source.stem in STREAMING
                else str(synthesis_cells(source))]

    sources = write_rtl(out, RtlConfig(rows=rows, cols=cols))
    table = Table("unit", "file", *(["yosys cells"] if synth else []))
    for source in sources:
        table.add_row(source.stem, str(source), *cells(source))
    console.print(table)
    say(f"wrote {out}; check bit-exactness with: python {out / 'run_tests.py'}")


@hw_app.command("synth")
@user_errors
def hw_synth(
    unit: Annotated[str, typer.Option(help="A unit `hw rtl` writes: gemm, mac_array, requant, "
                                           "softmax, layernorm, igelu, iexp, token_shift, "
                                           "stream_*")] = "gemm",
    fpga: Annotated[str, typer.Option(help="iCE40 part: up5k (5,280 LUTs, 8 DSPs, 30 block "
                                           "RAMs) or hx8k (7,680 LUTs, no DSPs)")] = "up5k",
    rows: Annotated[int, typer.Option(help="MAC array rows")] = 2,
    cols: Annotated[int, typer.Option(help="MAC array columns")] = 2,
    max_k: Annotated[int, typer.Option(help="GEMM engine: largest K its buffers hold")] = 16,
    lanes: Annotated[int, typer.Option(help="softmax, layernorm, token_shift: values per row")
                     ] = 2,
    freq: Annotated[float, typer.Option(help="Target clock for place and route (MHz)")] = 100,
    dsp_min_bits: Annotated[int, typer.Option(
        help="Multipliers with both operands this wide go to DSPs (0: none)")] = 9,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Place and route a generated unit on an iCE40 FPGA (yosys, nextpnr-ice40): LUT, flip-flop,
    DSP and block-RAM counts and the clock it achieves."""
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.hw.rtl.fpga import fpga_config, synthesize_unit

    if out is not None:
        check_replaceable_file(out)  # refuse a user's file before minutes of synthesis
    cfg = fpga_config(rows=rows, cols=cols, max_k=max_k, lanes=lanes)
    say(f"synthesizing {unit} for the {fpga} (minutes for a large unit)")
    record = synthesize_unit(unit, cfg, fpga, freq_mhz=freq, dsp_min_bits=dsp_min_bits)
    print_record(f"{unit} on the iCE40 {fpga}", {k: v for k, v in record.to_dict().items()
                                                  if not isinstance(v, dict)})
    if out is not None:
        record.save(out)
        say(f"wrote {out}")


@hw_app.command("top")
@user_errors
def hw_top(
    model: Annotated[str, typer.Option(
        help="A BERT encoder (minilm-l6) or a Llama-family decoder (smollm2-135m)")],
    tokens: Annotated[int, typer.Option(help="Test tokens the layers run on")] = 32,
    layers: Annotated[str | None, typer.Option(
        help="Layers to run in RTL, e.g. 0,1 (default: all)")] = None,
    simulator: Annotated[str, typer.Option(help="verilator (fast once built) or icarus")
                         ] = "verilator",
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Run MODEL's layers through the accelerator top in RTL: bit-exact against the integer
    program, cycles against the count and against the performance model."""
    import tempfile

    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.hw.rtl.testbench_stream import require_simulator
    from mfmaccel.hw.rtl.top_layers import run_layers

    out = out or Path("results") / f"{Path(model).name}-top.json"
    check_replaceable_file(out)  # refuse a user's file before minutes of simulation
    require_simulator(simulator)
    chosen = list(_values(layers, int)) if layers else None
    with Bars() as bars, tempfile.TemporaryDirectory(prefix="mfmaccel-top-") as tmp:
        record = run_layers(model, Path(tmp), tokens=tokens, layers=chosen,
                            simulator=simulator, progress=bars.task("layers in RTL"))
    table = Table("layer", "bit-exact", "RTL cycles", "counted", "model", "model vs RTL")
    for layer in record.layers:
        table.add_row(str(layer.index), str(layer.bit_exact), f"{layer.rtl_cycles:,}",
                      f"{layer.counted_cycles:,}", f"{layer.model_cycles:,}",
                      f"{layer.model_vs_rtl:+.2%}")
    console.print(table)
    record.save(out)
    say(f"wrote {out}")
    if not (record.all_bit_exact and record.all_counted_exactly):
        raise typer.Exit(1)


@hw_app.command("simulate")
@user_errors
def hw_simulate(
    model: Annotated[str, typer.Option(help="roberta-base or vit-base (configs only), a "
                                            "built-in model, tiny-<arch>, an HF folder (a "
                                            "config.json alone will do) or a .gguf file")],
    arch: Annotated[ArchPreset, typer.Option(help="Preset: swifttron, edge, large")
                    ] = ArchPreset.edge,
    seq_len: Annotated[int, typer.Option(help="Text tokens per forward pass")] = 128,
    image_size: Annotated[int | None, typer.Option(help="Vision encoders: pixels per side")
                          ] = None,
    rows: Annotated[int | None, typer.Option(help="Override: MAC array rows")] = None,
    cols: Annotated[int | None, typer.Option(help="Override: MAC array columns")] = None,
    clock_mhz: Annotated[float | None, typer.Option(help="Override: clock")] = None,
    bandwidth_gbs: Annotated[float | None, typer.Option(help="Override: off-chip GB/s")] = None,
    attention: Annotated[Attention | None, typer.Option(help="Override: tiled or full")] = None,
    fusion: Annotated[str | None, typer.Option(
        help="Override: fused schedules the arch has: none, epilogue, all, or a comma list of "
             "activation, norm, attention, mlp")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Predict cycles, energy and area of MODEL's forward pass on an accelerator, per operation,
    with a roofline plot next to the JSON."""
    quiet_libraries()
    from mfmaccel.hw.arch import customized_arch, parse_fusion
    from mfmaccel.hw.simulate import simulate
    from mfmaccel.hw.trace import workload_for_spec
    from mfmaccel.report.hwfigures import write_roofline

    target = customized_arch(arch.value, rows=rows, cols=cols, clock_mhz=clock_mhz,
                             bandwidth_gbs=bandwidth_gbs, attention=attention,
                             fusion=None if fusion is None else parse_fusion(fusion))
    result = simulate(workload_for_spec(model, seq_len=seq_len, image_size=image_size), target)
    out = out or Path("results") / f"{Path(model).name}-{arch.value}-L{seq_len}-simulate.json"
    result.save(out)
    write_roofline(result, out.with_suffix(".png"))
    table = Table("operation", "count", "GMACs", "cycles", "bound", "util", "off-chip MB",
                  "energy uJ", "flow", "schedule",
                  title=f"{model} ({result.workload}) on {target.name}")
    for op in result.ops:
        table.add_row(op.name, str(op.count), f"{op.macs / 1e9:.3f}", f"{op.cycles:,}", op.bound,
                      f"{op.utilisation:.0%}" if op.macs else "", f"{op.dram_bytes / 1e6:.2f}",
                      f"{sum(op.energy_pj.values()) / 1e6:.1f}", op.mapping.split(":")[0],
                      op.schedule.split(":")[0])
    console.print(table)
    say(f"fusion: {', '.join(result.fusion) or 'none'}")
    say(f"latency {result.latency_ms:.3f} ms, energy {result.energy_mj:.3f} mJ, on-chip power "
        f"{result.power_mw:.1f} mW, area {result.area_mm2:.2f} mm² ({target.tech.name}); matrix "
        f"multiplication {result.matmul_area_share:.0%} of area, "
        f"{result.matmul_power_share:.0%} of on-chip power")
    say(f"wrote {out}")


@hw_app.command("dse")
@user_errors
def hw_dse(
    model: Annotated[str, typer.Option(help="As for `hw simulate`")],
    seq_len: Annotated[int, typer.Option(help="Text tokens per forward pass")] = 128,
    image_size: Annotated[int | None, typer.Option(help="Vision encoders: pixels per side")
                          ] = None,
    arch: Annotated[ArchPreset, typer.Option(help="Preset whose technology and units are kept "
                                                  "(as for `hw simulate`)")] = ArchPreset.edge,
    rows: GridRows = None,
    cols: GridCols = None,
    a_buffer_kib: GridABuffer = None,
    b_buffer_kib: GridBBuffer = None,
    out_buffer_kib: GridOutBuffer = None,
    bandwidth_gbs: GridBandwidth = None,
    clock_mhz: GridClock = None,
    vector_lanes: GridLanes = None,
    weight_bits: Annotated[str | None, typer.Option(help="Weight bit-widths, e.g. 4,8")] = None,
    fusion: Annotated[str | None, typer.Option(
        help="Fused schedules every design has (as for `hw simulate`)")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Keep designs at most this")
                              ] = None,
    max_energy_mj: Annotated[float | None, typer.Option()] = None,
    max_area_mm2: Annotated[float | None, typer.Option()] = None,
    max_power_mw: Annotated[float | None, typer.Option()] = None,
    workers: Workers = 1,
    scheduler: Scheduler = None,
    out: Annotated[Path | None, typer.Option(help="Output folder")] = None,
) -> None:
    """Sweep accelerator designs for MODEL; write the Pareto front of latency, energy and area
    (front.json, front.png) and every design point (points.json)."""
    quiet_libraries()
    from mfmaccel.hw.arch import parse_fusion
    from mfmaccel.hw.dse import Constraints, DesignSpace, explore
    from mfmaccel.hw.trace import workload_for_spec
    from mfmaccel.parallel import Executor

    given = {"rows": _values(rows, int), "cols": _values(cols, int),
             "a_buffer_kib": _values(a_buffer_kib), "b_buffer_kib": _values(b_buffer_kib),
             "out_buffer_kib": _values(out_buffer_kib), "bandwidth_gbs": _values(bandwidth_gbs),
             "clock_mhz": _values(clock_mhz), "vector_lanes": _values(vector_lanes, int),
             "weight_bits": _values(weight_bits, int)}
    if fusion is not None:
        given["fusion"] = parse_fusion(fusion)
    space = DesignSpace(base=arch.value, **{k: v for k, v in given.items() if v is not None})
    executor = Executor(workers=workers, scheduler=scheduler)
    workload = workload_for_spec(model, seq_len=seq_len, image_size=image_size)
    with Bars() as bars:
        result = explore(workload, space, executor=executor,
                         constraints=Constraints(max_latency_ms=max_latency_ms,
                                                 max_energy_mj=max_energy_mj,
                                                 max_area_mm2=max_area_mm2,
                                                 max_power_mw=max_power_mw),
                         progress=bars.task(f"designs of {model}"))
    out = out or Path("results") / f"dse-{Path(model).name}-L{seq_len}"
    _write_exploration(result, out)


@hw_app.command("codesign")
@user_errors
def hw_codesign(
    model: Annotated[str, typer.Option(
        help="A causal LM or text encoder (smollm2-135m), a vision model (dinov2-s14) or a VLM "
             "(medvlm: its vision tower)")],
    arch: Annotated[ArchPreset, typer.Option(help="Preset whose technology and units are kept "
                                                  "(as for `hw dse`)")] = ArchPreset.edge,
    weight_bits: Annotated[str, typer.Option(help="Bit-widths each block may take")
                           ] = "2,3,4,8",
    seq_len: Annotated[int, typer.Option(help="Text models: tokens per priced forward pass")
                       ] = 128,
    calib_tokens: Annotated[int, typer.Option(help="Text: train tokens the sensitivity "
                                                   "measures on")] = 1024,
    tokens: Annotated[int, typer.Option(help="Text: test tokens the checks score")] = 1024,
    calibration: Annotated[int, typer.Option(help="Vision: train images the sensitivity "
                                                  "measures on")] = 32,
    images: Annotated[int, typer.Option(help="Vision: test images the checks score")] = 32,
    tier: Annotated[str, typer.Option(help="What one bit-width covers: block (all its linears) "
                                           "or module (each linear, one step from its block)")
                    ] = "block",
    steps: Annotated[int, typer.Option(help="Byte budgets on the mixed-precision ladder")] = 12,
    checks: Annotated[int, typer.Option(help="Mixed front points quantized and measured "
                                             "(every uniform one is too)")] = 3,
    rows: GridRows = None,
    cols: GridCols = None,
    a_buffer_kib: GridABuffer = None,
    b_buffer_kib: GridBBuffer = None,
    out_buffer_kib: GridOutBuffer = None,
    bandwidth_gbs: GridBandwidth = None,
    clock_mhz: GridClock = None,
    vector_lanes: GridLanes = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Keep points at most this")
                              ] = None,
    max_energy_mj: Annotated[float | None, typer.Option()] = None,
    max_area_mm2: Annotated[float | None, typer.Option()] = None,
    max_power_mw: Annotated[float | None, typer.Option()] = None,
    workers: Workers = 1,
    scheduler: Scheduler = None,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Search weight bit-widths per block (or per linear) with accelerator designs for MODEL: the
    front of predicted quality, latency, energy and area, which mixed points dominate the
    uniform ones, and the predictions checked on held-out data (`hw.codesign`)."""
    quiet_libraries()
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.hw.codesign_run import codesign_for_spec
    from mfmaccel.hw.dse import Constraints, DesignSpace
    from mfmaccel.parallel import Executor

    given = {"rows": _values(rows, int), "cols": _values(cols, int),
             "a_buffer_kib": _values(a_buffer_kib), "b_buffer_kib": _values(b_buffer_kib),
             "out_buffer_kib": _values(out_buffer_kib), "bandwidth_gbs": _values(bandwidth_gbs),
             "clock_mhz": _values(clock_mhz), "vector_lanes": _values(vector_lanes, int)}
    space = DesignSpace(base=arch.value, **{k: v for k, v in given.items() if v is not None})
    bits = _values(weight_bits, int)
    executor = Executor(workers=workers, scheduler=scheduler)
    out = out or Path("results") / f"codesign-{Path(model).name}-{arch.value}.json"
    check_replaceable_file(out)  # refuse a user's file before minutes of compute
    with Bars() as bars:
        record = codesign_for_spec(
            model, space, bits=bits, seq_len=seq_len, calib_tokens=calib_tokens,
            tokens=tokens, calibration=calibration, images=images, tier=tier, steps=steps,
            checks=checks, executor=executor,
            constraints=Constraints(max_latency_ms=max_latency_ms, max_energy_mj=max_energy_mj,
                                    max_area_mm2=max_area_mm2, max_power_mw=max_power_mw),
            progress=bars.task)
    record.save(out)
    _print_codesign(record)
    say(f"wrote {out}")


def _print_codesign(record) -> None:
    """Each uniform assignment's design front, how much of it mixed points dominate, and the
    checked predictions."""
    table = Table("uniform", "front designs", "dominated", "e.g. dominated by",
                  title=f"{record.model}: {len(record.front)} front points of "
                        f"{len(record.assignments)} assignments x {record.designs} designs")
    for entry in record.uniform:
        example = next((p["dominated_by"] for p in entry["front"] if p["dominated_by"]), None)
        table.add_row(entry["assignment"], str(len(entry["front"])),
                      str(entry["front_dominated"]),
                      "" if example is None else f"{example['assignment']} on "
                                                 f"{example['params']}")
    console.print(table)
    checks = Table("assignment", f"predicted {record.signal}", f"measured {record.signal}",
                   "weight bytes", title="predictions checked on held-out data")
    for check in record.checks:
        checks.add_row(check["assignment"], f"{check['predicted']:.4g}",
                       f"{check['measured']:.4g}", f"{check['weight_bytes']:,}")
    console.print(checks)


def _write_exploration(result, out: Path) -> None:
    """front.json, points.json and front.png in `out`, and the front as a table."""
    from mfmaccel.hw.dse import describe
    from mfmaccel.hw.dse_files import write_exploration
    from mfmaccel.report.hwfigures import write_dse_front

    write_exploration(result, out)
    write_dse_front(result, out)
    table = Table("latency ms", "energy mJ", "area mm²", "power mW", "design",
                  title=f"Pareto front: {len(result.front)} of {result.evaluated} designs "
                        f"({result.points_per_minute:,.0f} per minute)")
    for point in result.front[:15]:
        table.add_row(f"{point.latency_ms:.3f}", f"{point.energy_mj:.3f}",
                      f"{point.area_mm2:.2f}", f"{point.power_mw:.0f}",
                      describe(point.params))
    console.print(table)
    say(f"wrote {out}")


def _values(text: str | None, cast=float) -> tuple | None:
    """'8,16,32' -> (8, 16, 32)."""
    if text is None:
        return None
    try:
        return tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserInputError(f"'{text}' is not a comma-separated list of numbers, e.g. "
                             f"8,16,32") from None


@hw_app.command("design")
@user_errors
def hw_design(
    task: Annotated[str | None, typer.Option(
        help="One task: a VerilogEval v2 problem (Prob004 or Prob004_vector2) or one of our "
             "units (requant, iexp, igelu, softmax, layernorm, token_shift, mac_array)")] = None,
    suite: Annotated[str | None, typer.Option(
        help="A suite of tasks: verilog-eval, or mfmaccel-units (our hw.rtl units)")] = None,
    problems: Annotated[str | None, typer.Option(
        help="With --suite: the first N problems, or a comma list of names")] = None,
    model: Annotated[str | None, typer.Option(
        help="Causal LM that writes the Verilog: built-in name (qwen2.5-coder-0.5b), HF folder "
             "or .gguf")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="An OpenAI-compatible endpoint instead of --model, e.g. http://127.0.0.1:8000/v1 "
             "(the specs are sent there; key from $OPENAI_API_KEY)")] = None,
    api_model: Annotated[str | None, typer.Option(help="The endpoint's model name")] = None,
    rounds: Annotated[int, typer.Option(help="Rounds at most (1: no feedback)")] = 1,
    candidates: Annotated[int, typer.Option(help="Replies per round; the best is kept")] = 1,
    temperature: Annotated[float, typer.Option(help="0: greedy (needs --candidates 1)")] = 0.0,
    greedy_first: Annotated[bool, typer.Option(
        help="Round 1's first reply greedy (the zero-shot pass@1), the rest sampled at "
             "--temperature")] = False,
    revise: Annotated[str, typer.Option(
        help="How a later round asks again: 'conversation' (the previous answer and the "
             "feedback on it) or 'fresh' (the spec again with only the feedback)")
                      ] = "conversation",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most per reply")
                              ] = 768,
    draft: Annotated[str, typer.Option(
        help="--model: a lossless draft to speculate with ('self:int8', the model's own int8 "
             "copy; 'none': plain decoding)")] = "self:int8",
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    data: Annotated[Path | None, typer.Option(
        help="The verilog-eval-v2 folder (default: $MFMACCEL_VERILOG_EVAL or "
             "../shared/data/verilog-eval-v2)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Spec -> model -> Verilog -> lint and simulation -> feedback -> next round (AutoChip-style):
    pass@1 and pass with feedback per task and overall."""
    quiet_libraries()
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.hw.llm_design.loop import LoopSettings
    from mfmaccel.hw.llm_design.run import design_run, make_generator, select_tasks, summary_line

    settings = LoopSettings(rounds, candidates, temperature, max_new_tokens, seed, greedy_first,
                            revise)
    tasks = select_tasks(task=task, suite=suite, problems=problems, data=data)
    name = Path(model).name if model else (api_model or "endpoint")
    out = out or Path("results") / f"{name}-design.json"
    check_replaceable_file(out)  # refuse a user's file before minutes of generation
    generator = make_generator(model=model, endpoint=endpoint, api_model=api_model,
                               draft=None if draft == "none" else draft)
    with Bars() as bars:
        record = design_run(tasks, generator, settings, progress=bars.task("design"))
    record.save(out)
    print_record(f"LLM-aided design with {generator.name}",
                 {k: v for k, v in record.to_dict().items() if k not in ("settings", "skipped")})
    say(summary_line(record))
    say(f"wrote {out}")
