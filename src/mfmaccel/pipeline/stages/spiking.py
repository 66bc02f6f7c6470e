"""`spiking`: the run's current model as a spiking network (the method's spiking extension):
its static-scale integer program converted to integrate-and-fire neurons, run until no neuron
fires. The model is unchanged. Artifact: `spiking.json` (`spiking.quality.SpikingAgreement`:
steps to settle, bit equality with the integer program, cosine to float after given steps,
spike rate, ACs against MACs, arithmetic energy)."""

from __future__ import annotations

from pydantic import Field

from mfmaccel.hw.arch import get_arch
from mfmaccel.models.record import ENCODER, VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport
from mfmaccel.spiking.quality import spiking_agreement, tower_agreement


class SpikingParams(StageParams):
    levels: int | None = Field(16, ge=1, description="unit spikes a neuron may fire in one "
                                                     "step (null: any number)")
    steps: list[int] = Field([8, 16, 32, 64, 128, 256],
                             description="steps after which to score the output")
    max_steps: int = Field(4096, ge=1, description="stop a run that has not settled here")
    inputs: int = Field(8, ge=1, description="test paragraphs (encoder) or images (VLM)")
    calibration: int = Field(64, ge=1, description="train paragraphs or images")
    activation_bits: int | None = Field(None, ge=2, le=8, description=(
        "bits of every tensor a product reads, probabilities included (null: int8 with "
        "12-bit probabilities)"))
    avg_bits: float | None = Field(None, gt=0, lt=16, description=(
        "mix the weight bits (3, 4, 6, 8 per linear) to this average per weight, scales "
        "included (null: int8)"))
    arch: str | None = Field(None, description="an accelerator preset to price the spikes on "
                                               "(its spiking variant against it)")


def run(model: LoadedModel, params: SpikingParams, ctx: RunContext):
    if params.arch is not None:
        get_arch(params.arch)  # an unknown preset is refused before minutes of spiking
    measure = spiking_agreement if model.kind == ENCODER else tower_agreement
    found = measure(model, levels=params.levels, inputs=params.inputs,
                    calibration=params.calibration, steps=params.steps,
                    max_steps=params.max_steps, activation_bits=params.activation_bits,
                    avg_bits=params.avg_bits, arch=params.arch, progress=ctx.progress)
    found.save(ctx.stage_dir / "spiking.json")
    last = max(found.cosine_at) if found.cosine_at else None
    settled = [s for s in found.settle_steps if s is not None]
    notes = (f"{found.settled}/{found.batches} batches settled"
             + (f" (by step {max(settled)}), bit-exact: {found.bit_exact}" if settled else "")
             + f"; cosine to float {found.integer_cosine:.4f} integer"
             + (f", {found.cosine_at[last]:.4f} spiking at {last} steps" if last else "")
             + _memory_note(found)
             + f"; {found.accumulates / max(1, found.macs):.1f} ACs per integer MAC, "
             f"arithmetic energy x{found.compute_uj_45nm['ratio']:.1f} at 45 nm"
             + _energy_note(found.energy))
    return model, StageReport(artifacts=["spiking.json"], notes=notes)


def _memory_note(found) -> str:
    """The weights' bytes against fp16, in a clause."""
    memory = found.memory
    return (f"; weights {memory['weight_bytes'] / 1e6:.2f} MB at {memory['average_bits']:.2f} "
            f"bits a weight, {memory['cut']:.1%} below fp16's {memory['fp16_bytes'] / 1e6:.2f}")


def _energy_note(energy: list[dict]) -> str:
    """The settled run on the spiking accelerator, in a clause (nothing without one)."""
    if not energy:
        return ""
    settled = energy[-1]
    rate = settled["break_even_rate"]
    return (f"; on {settled['spiking_arch']} x{settled['ratio']:.1f} {settled['arch']}'s "
            f"energy, break-even spike rate "
            + (f"{rate:.3f}" if rate else "none (no rate pays)"))


STAGE = Stage(
    name="spiking", run=run, params=SpikingParams, accepts=(ENCODER, VLM),
    changes_model=False, measure_after=False,
    summary="the model as a spiking network: steps, spikes, ACs against its integer program",
)
