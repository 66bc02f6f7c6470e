"""An exploration on disk (`hw.dse_files`) reads back as it was (`dse.load_exploration`), and
its figure lands beside it (`report.hwfigures`)."""

from __future__ import annotations

import json

from mfmaccel.hw.dse import DesignSpace, explore, load_exploration
from mfmaccel.hw.dse_files import write_exploration
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.report.hwfigures import write_dse_front


def test_an_exploration_reads_back_as_written(tmp_path) -> None:
    space = DesignSpace(rows=(8, 16), cols=(8,), a_buffer_kib=(32,), b_buffer_kib=(64,),
                        out_buffer_kib=(16,), bandwidth_gbs=(8.5,), clock_mhz=(200, 400),
                        vector_lanes=(16,))
    result = explore(workload_for_spec("roberta-base", 16), space, workers=1)
    write_exploration(result, tmp_path)
    assert load_exploration(tmp_path) == result
    front = json.loads((tmp_path / "front.json").read_text())
    assert "points" not in front and front["evaluated"] == result.evaluated
    assert len(json.loads((tmp_path / "points.json").read_text())) == len(result.points)
    write_dse_front(result, tmp_path)
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
