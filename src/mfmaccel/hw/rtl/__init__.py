"""Synthesizable Verilog for the accelerator's units, generated from the same parameters the
integer golden model (`hw.intops`) uses, so a testbench can demand bit-for-bit agreement."""
