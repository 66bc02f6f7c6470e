"""An exploration on disk (`hw.dse_files`) holds the record as it was, and its figure lands
beside it (`report.hwfigures`)."""

from __future__ import annotations

import json

from mfmaccel.hw.dse import DesignSpace, explore
from mfmaccel.hw.dse_files import write_exploration
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.report.hwfigures import write_dse_front


def test_an_exploration_reads_back_as_written(tmp_path) -> None:
    space = DesignSpace(rows=(8, 16), cols=(8,), a_buffer_kib=(32,), b_buffer_kib=(64,),
                        out_buffer_kib=(16,), bandwidth_gbs=(8.5,), clock_mhz=(200, 400),
                        vector_lanes=(16,))
    result = explore(workload_for_spec("roberta-base", 16), space)
    write_exploration(result, tmp_path)
    front = json.loads((tmp_path / "front.json").read_text())
    points = json.loads((tmp_path / "points.json").read_text())
    assert "points" not in front and front["evaluated"] == result.evaluated
    assert {**front, "points": points} == json.loads(result.to_json())
    write_dse_front(result, tmp_path)
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
