"""LLM-aided hardware design (issue 26): tasks, and the tools that judge a model's Verilog.

Part A, the foundation the loop stands on: `task` (`DesignTask`, ports read off the reference
header), `verilog_eval` (VerilogEval v2's 156 spec-to-RTL problems), `screen` (refusing system
tasks, file reads and strings before any tool runs), `bench` (a per-run token in the bench's
report line and names), `sandboxed` (iverilog, vvp, verilator, yosys run inside
`evaluate.sandbox`), `simulate` (the verdict: pass, mismatch, compile error, timeout, output
flood, runtime failure, refused), `tools` (verilator lint, yosys cells and area) and
`references` (each task's reference against its own bench).

Part B, the closed loop: `prompt` (VerilogEval's spec-to-RTL prompt, the feedback turn,
`extract_module`), `feedback` (the first errors, mismatching outputs or port differences, capped),
`generators` (our engine with its lossless int8 self-draft, or an OpenAI-compatible endpoint),
`loop` (R rounds of k candidates, the best fed back, stopping at the first pass) and `run` (what
`mfmaccel hw design`, the `design` stage and the benchmark share). See docs/llm-design.md.
"""
