"""`quantize`: hierarchy-aware mixed-precision quantization to a budget (layer 2 of the method),
or one uniform spec. Artifacts: `compression.json` (sensitivity per tier, the predicted front,
verified points, the chosen bit-widths)."""

from __future__ import annotations

from pydantic import Field, model_validator

from mfmaccel.compress.search import DEFAULT_SPECS, Budget, compress_to_budget, uniform_to_spec
from mfmaccel.models.record import CAUSAL_LM, VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport
from mfmaccel.runtime.choices import ActivationMode, Method


class QuantizeParams(StageParams):
    budget_fraction: float | None = Field(None, gt=0, le=1, description="of the FP16 bytes")
    budget_bytes: int | None = Field(None, gt=0)
    avg_bits: float | None = Field(None, gt=0, le=16)
    max_ppl_increase: float | None = Field(None, gt=0)
    uniform: str | None = None  # e.g. "int4-g128": no search, every part at this spec
    activations: ActivationMode | None = None  # W8A8, with uniform int8-c-sym
    smoothing: float | None = Field(None, ge=0, le=1, description="SmoothQuant alpha")
    specs: list[str] = list(DEFAULT_SPECS)
    method: Method = Method.gptq
    calib_tokens: int = Field(2048, ge=64)
    eval_tokens: int = Field(8192, ge=64)

    @model_validator(mode="after")
    def _one_target(self) -> QuantizeParams:
        given = [x for x in (self.budget_fraction, self.budget_bytes, self.avg_bits,
                             self.max_ppl_increase, self.uniform) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of budget_fraction, budget_bytes, avg_bits, "
                             "max_ppl_increase, uniform")
        if (self.activations is not None or self.smoothing is not None) and \
                self.uniform is None:
            raise ValueError("activations (W8A8) and smoothing need uniform: int8-c-sym")
        return self


def run(model: LoadedModel, params: QuantizeParams, ctx: RunContext):
    if params.uniform is not None:
        model = uniform_to_spec(model, params.uniform, method=params.method,
                                calib_tokens=params.calib_tokens,
                                activations=params.activations, smoothing=params.smoothing)
        acts = f", int8 activations per {params.activations}" if params.activations else ""
        return model, StageReport(notes=f"uniform {params.uniform} ({params.method}{acts})")
    size = params.budget_bytes
    if params.budget_fraction is not None:
        size = int(params.budget_fraction * 2 * model.params)
    budget = Budget(bytes=size, avg_bits=params.avg_bits,
                    max_ppl_increase=params.max_ppl_increase)
    model, record = compress_to_budget(
        model, budget, params.specs, method=params.method, calib_tokens=params.calib_tokens,
        eval_tokens=params.eval_tokens, log=ctx.log, progress=ctx.progress,
    )
    record.save(ctx.stage_dir / "compression.json")
    blocks = record.sensitivity["blocks"]
    curves = {f"{label}/block_kl": [blocks[b][label] for b in blocks]
              for label in record.sensitivity["specs"]}
    notes = (f"{record.fraction_of_fp16:.1%} of FP16 bytes; bit-widths "
             f"{record.choice_histogram}")
    return model, StageReport(artifacts=["compression.json"], notes=notes, curves=curves)


STAGE = Stage(
    name="quantize", run=run, params=QuantizeParams, accepts=(CAUSAL_LM, VLM),
    summary="mixed-precision weight quantization to a byte, bit or quality budget",
)
