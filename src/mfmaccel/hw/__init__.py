"""Layer 4 of the method: integer-only execution and the accelerator that runs it."""
