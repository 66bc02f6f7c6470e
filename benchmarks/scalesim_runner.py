"""Run SCALE-Sim 3.0.0 (PyPI ``scalesim``) on one GEMM and report its cycle counts.

Why: we compare our own systolic-array cycle model against the reference
simulator SCALE-Sim. Rather than trusting a paper formula, this runner drives
the real simulator on a single GEMM layer, in a throw-away temporary
directory, with memory stalls taken out of the picture, so that what comes
back is SCALE-Sim's pure compute-cycle count.

How the GEMM is mapped (``scalesim.topology_utils.load_arrays_gemm``): a GEMM
topology row ``name, M, N, K,`` becomes a 1-D convolution with
ifmap ``M x K``, filter ``1 x K``, one channel and ``N`` filters.  So

* M = number of ofmap pixels  (rows of A, rows of the output),
* N = number of filters       (columns of B, columns of the output),
* K = convolution window size (the reduction dimension).

Per dataflow the spatial/temporal mapping (``Sr, Sc, T``) is
``os: (M, N, K)``, ``ws: (K, N, M)``, ``is: (K, M, N)``.

How memory stalls are removed: the config uses ``InterfaceBandwidth = CALC``
(SCALE-Sim's "estimate bandwidth" mode), in which the ifmap/filter read
buffers are stall-free by construction (``read_buffer_estimate_bw``: "In
estimate mode, operation is stall free").  The only remaining stall source is
the ofmap write buffer, which is made larger than the whole output so it never
has to drain during the run.  The returned ``stall_cycles`` is checked to be 0.

Which number is which (``single_layer_sim.get_compute_report_items``):

* ``compute_cycles`` -- "Total Cycles" column of COMPUTE_REPORT.csv, printed as
  "Compute cycles" by the verbose simulator: the cycle at which the last ofmap
  demand row is served, i.e. (number of demand rows - 1) + stall cycles.
* ``total_cycles`` -- "Total Cycles (incl. prefetch)": from the first DRAM
  read to the last DRAM write, so it includes the estimated DRAM prefetch
  of operands and the final drain of the ofmap buffer to DRAM.
* ``utilisation`` -- "Overall Util %" / 100 = M*N*K / (compute_cycles * R*C).

NumPy >= 2.4 note: scalesim 3.0.0 calls ``int()`` on a 1-element 1-D array in
``double_buffered_scratchpad.service_memory_requests``, which NumPy 2.4 rejects
("only 0-dimensional arrays can be converted to Python scalars").  We do not
patch the installed package; instead ``_numpy_compat`` temporarily wraps the
ofmap ``write_buffer.service_writes`` so it returns a flat array with the same
values, which makes that ``int()`` receive a scalar.  Cycle values are unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

DATAFLOWS = ("os", "ws", "is")


@contextlib.contextmanager
def _numpy_compat() -> Iterator[None]:
    """Temporarily make scalesim 3.0.0's write buffer return 1-D cycle arrays."""
    from scalesim.memory.write_buffer import write_buffer

    original = write_buffer.service_writes

    def service_writes(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **kwargs).reshape(-1)

    write_buffer.service_writes = service_writes  # type: ignore[method-assign]
    try:
        yield
    finally:
        write_buffer.service_writes = original  # type: ignore[method-assign]


def _config_text(rows: int, cols: int, dataflow: str, m: int, n: int, k: int) -> str:
    """SCALE-Sim .cfg text: CALC bandwidth mode, no sparsity, no custom layout."""

    def kb(words: int) -> int:
        # word size is 1 byte in SCALE-Sim; leave generous headroom
        return max(64, 2 * math.ceil(words / 1024) + 1)

    ifmap_words, filter_words, ofmap_words = m * k, k * n, m * n
    filter_offset = ifmap_words + 1024
    ofmap_offset = filter_offset + filter_words + 1024
    return f"""[general]
run_name = gemm

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {kb(ifmap_words)}
FilterSramSzkB = {kb(filter_words)}
OfmapSramSzkB = {kb(ofmap_words)}
IfmapOffset = 0
FilterOffset = {filter_offset}
OfmapOffset = {ofmap_offset}
Bandwidth = 10
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 4
RandomNumberGeneratorSeed = 40
"""


def scalesim_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> dict[str, Any]:
    """Simulate C[M,N] = A[M,K] @ B[K,N] on a rows x cols array with SCALE-Sim.

    Returns a dict with ``compute_cycles`` (stall-free compute cycles, the
    number to compare against), ``total_cycles`` (including DRAM prefetch and
    final drain), ``stall_cycles`` (always 0 here), ``utilisation`` (0..1),
    ``mapping_efficiency`` and ``compute_utilisation`` (0..1, per-fold averages
    as SCALE-Sim reports them) and ``wall_s``.
    """
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    if min(m, n, k, rows, cols) < 1:
        raise ValueError("all dimensions must be positive")

    from scalesim.scale_sim import scalesim  # imported lazily: optional dependency

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scalesim_") as tmp:
        cfg_path = os.path.join(tmp, "gemm.cfg")
        topo_path = os.path.join(tmp, "gemm.csv")
        layout_path = os.path.join(tmp, "layout.csv")
        with open(cfg_path, "w") as f:
            f.write(_config_text(rows, cols, dataflow, m, n, k))
        with open(topo_path, "w") as f:
            # trailing comma is required: the parser drops the last field
            f.write("Layer, M, N, K,\n")
            f.write(f"gemm, {m}, {n}, {k},\n")
        with open(layout_path, "w") as f:
            # scalesim always parses a layout file; a header-only one is enough
            # when custom layouts are disabled
            f.write("Layer name,\n")

        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), _numpy_compat():
            sim = scalesim(
                save_disk_space=True,  # do not write SRAM/DRAM traces
                verbose=False,
                config=cfg_path,
                topology=topo_path,
                layout=layout_path,
                input_type_gemm=True,
            )
            sim.run_scale(top_path=os.path.join(tmp, "out"))
        layer = sim.runner.single_layer_sim_object_list[0]
        total, compute, stalls, util, map_eff, comp_util = layer.get_compute_report_items()
    wall = time.perf_counter() - t0

    if stalls != 0:
        raise RuntimeError(f"unexpected memory stalls ({stalls}) in SCALE-Sim run")
    return {
        "compute_cycles": int(compute),
        "total_cycles": int(total),
        "stall_cycles": int(stalls),
        "utilisation": float(util) / 100.0,
        "mapping_efficiency": float(map_eff) / 100.0,
        "compute_utilisation": float(comp_util) / 100.0,
        "wall_s": round(wall, 3),
    }


def main(argv: list[str]) -> int:
    """`python benchmarks/scalesim_runner.py M N K ROWS COLS os|ws|is`: one GEMM, JSON out.
    benchmarks/hw_model.py runs the comparison table against the performance model."""
    if len(argv) != 6:
        print("usage: scalesim_runner.py M N K ROWS COLS os|ws|is", file=sys.stderr)
        return 2
    m, n, k, rows, cols = (int(v) for v in argv[:5])
    print(json.dumps(scalesim_cycles(m, n, k, rows, cols, argv[5])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
