"""Integer-only execution of real models: calibrate activation scales on real data, convert
the float model into integer weights and integer constants, run it with `hw.intops` alone."""
