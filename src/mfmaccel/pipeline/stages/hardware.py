"""`hardware`: the run's current model (pruned and quantized as the stages before left it)
mapped onto an accelerator configuration (layer 4 of the method): predicted latency, energy,
power and area per forward pass. The model is unchanged. Artifacts: `hardware.json` (every
operation: cycles, mapping, traffic, energy), which the report draws as a roofline."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from mfmaccel.hw.arch import get_arch, parse_fusion
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION, VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport


class HardwareParams(StageParams):
    arch: str = Field("edge", description="architecture preset: swifttron, edge, large")
    seq_len: int = Field(128, ge=1, description="text tokens per forward pass")
    image_size: int | None = Field(None, ge=1, description="vision encoders: pixels per side")
    attention: str | None = Field(None, pattern="^(tiled|full)$",
                                  description="override the preset's attention scheme")
    fusion: str | None = Field(None, description="override the fused schedules: none, epilogue, "
                                                 "all, or a comma list of kinds")


def run(model: LoadedModel, params: HardwareParams, ctx: RunContext):
    arch = get_arch(params.arch)
    if params.attention:
        arch = replace(arch, attention=params.attention)
    if params.fusion is not None:
        arch = replace(arch, fusion=parse_fusion(params.fusion))
    result = simulate(workload_for_model(model, params.seq_len, params.image_size), arch)
    result.save(ctx.stage_dir / "hardware.json")
    bound = sum(op.cycles for op in result.ops if op.bound == "bandwidth") / result.cycles
    notes = (f"on {arch.name} ({arch.tech.name}, {arch.rows}x{arch.cols} MACs, "
             f"{arch.clock_mhz:g} MHz), {result.workload}: {result.latency_ms:.2f} ms, "
             f"{result.energy_mj:.2f} mJ, {result.power_mw:.0f} mW on chip, "
             f"{result.area_mm2:.1f} mm²; array utilisation {result.utilisation:.0%}, "
             f"{bound:.0%} of cycles bandwidth-bound")
    return model, StageReport(artifacts=["hardware.json"], notes=notes)


STAGE = Stage(
    name="hardware", run=run, params=HardwareParams, accepts=(CAUSAL_LM, ENCODER, VISION, VLM),
    changes_model=False, measure_after=False,
    summary="predicted latency, energy and area on an accelerator",
)
