"""Evaluations: benchmarks, scoring and the sandbox that runs model-generated code."""
