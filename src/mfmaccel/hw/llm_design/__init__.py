"""LLM-aided hardware design: a model writes Verilog from a spec, tools judge it, a loop feeds
the judgement back, and every accepted design is security-checked.

Tasks: `task` (`DesignTask`, ports read off the reference header), `verilog_eval` (VerilogEval
v2's 156 spec-to-RTL problems), `unit_tasks` with `unit_specs`, `unit_golden` and `unit_bench`
(our own `hw.rtl` units: specs written out, golden outputs from `hw.intops`, a vector bench).

Judging untrusted Verilog: `screen` (refusing system tasks, file reads and strings before any
tool runs), `bench` (a per-run token in the bench's report line and names; the first
mismatching samples printed), `sandboxed` (iverilog, vvp, verilator, yosys run inside
`evaluate.sandbox`), `simulate` (the verdict: pass, mismatch, compile error, timeout, output
flood, runtime failure, refused), `tools` (verilator lint, yosys cells and area), `references`
(each task's reference against its own bench).

The loop: `prompt` (VerilogEval's spec-to-RTL prompt, the revision turn, `extract_module`),
`feedback` (the first errors, mismatching outputs and samples, or port differences, capped),
`generators` (our engine with its lossless int8 self-draft, or an OpenAI-compatible endpoint),
`loop` (R rounds of k candidates, the best fed back, stopping at the first pass) and `run` (what
`mfmaccel hw design`, the `design` stage and the benchmark share).

Security: `equivalence` (a yosys miter and SAT proof against the reference), `cwe_lint`
(debug ports, latches, rare-trigger compares, implicit nets, tool conditionals),
`contamination` (n-gram overlap with the reference) and `security` (the three as one report).
See docs/llm-design.md.
"""
