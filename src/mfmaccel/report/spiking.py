"""The spiking stage's record as a table: the float model, its integer program and the spiking
program after each step count and settled, side by side in quality, weight memory, spike rate
and energy (`spiking.quality.SpikingAgreement`, `spiking.json`)."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1e6


@dataclass
class SpikingTable:
    title: str
    titles: list[str]
    rows: list[list[str]]
    note: str


def _energy(entry: dict | None) -> list[str]:
    """Energy on the spiking accelerator, its ratio to the integer one and the spike rate."""
    if entry is None:
        return ["", "", ""]
    return [f"{entry['spiking_uj']:,.0f}", f"x{entry['ratio']:.1f}", f"{entry['spike_rate']:.3f}"]


def spiking_table(record: dict) -> SpikingTable:
    """Rows: float, the integer program, the spiking program after each scored step count and
    once settled (or at the step limit)."""
    memory = record.get("memory") or {}
    fp16 = f"{memory['fp16_bytes'] / MB:.2f}" if memory else ""
    program = f"{memory['weight_bytes'] / MB:.2f}" if memory else ""
    bits = f"{memory['average_bits']:.2f}" if memory else ""
    energy = {entry["steps"]: entry for entry in record.get("energy", [])}
    settled = energy.get("settled")
    integer_energy = [f"{settled['integer_uj']:,.0f}", "x1.0", ""] if settled else ["", "", ""]
    rows = [["float", "1.0000", fp16, "16", "", "", ""],
            ["integer program", f"{record['integer_cosine']:.4f}", program, bits,
             *integer_energy]]
    for steps, cosine in sorted(record.get("cosine_at", {}).items(), key=lambda kv: int(kv[0])):
        rows.append([f"spiking, {steps} steps", f"{cosine:.4f}", program, bits,
                     *_energy(energy.get(str(steps)))])
    last = [s for s in record.get("settle_steps", []) if s is not None]
    done = record["settled"] == record["batches"]
    label = f"spiking, settled (step {max(last)})" if done and last else \
        f"spiking, stopped at {record['max_steps']} steps"
    exact = record.get("bit_exact")
    rows.append([label, f"{record['integer_cosine']:.4f}" if done and exact else "", program, bits,
                 *_energy(settled)])
    arch = f" on {settled['spiking_arch']} against {settled['arch']}" if settled else ""
    note = (f"{record['measure']} of {record['inputs']} inputs, cosine to float; weights: the "
            f"GEMM weights with their scales (MB), against fp16; "
            f"{record['levels'] or 'any'} unit spikes a neuron per step"
            + (f"; energy (uJ){arch}, spike rate per fed neuron per step" if settled else
               "; no accelerator given (arch), so no energy"))
    return SpikingTable(f"Spiking network ({record['model']})",
                        ["", "cosine to float", "weights (MB)", "bits per weight",
                         "energy (uJ)", "vs integer", "spike rate"], rows, note)


__all__ = ["SpikingTable", "spiking_table"]
