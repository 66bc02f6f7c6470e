"""Progress without a terminal: plain lines on stderr, a few per step, never silence."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from mfmaccel.progress import PlainProgress, fmt_seconds, progress_line

LINE = re.compile(r"^(?P<label>.+): (?P<done>\d+)/(?P<total>\d+) \(\d+%\) \d")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_rate_limited_and_the_last_always_shows() -> None:
    stream, clock = io.StringIO(), FakeClock()
    update = PlainProgress(stream, every=5.0, clock=clock).task("sensitivity")
    clock.now = 2.0  # set-up before the first item (e.g. calibration)
    for done in range(1, 49):
        clock.now += 0.5
        update(done, 48)
    lines = stream.getvalue().splitlines()
    # the first item, then one line per 5 s of the 24 s, then the last
    assert lines[0] == "sensitivity: 1/48 (2%) 2.5 s"  # no pace yet: no estimate
    # the pace since the first item, without the 2 s of set-up: 0.5 s an item
    assert lines[1] == "sensitivity: 11/48 (23%) 7.5 s, about 18.5 s left"
    assert lines[-1] == "sensitivity: 48/48 (100%) 26.0 s"
    assert len(lines) == 6
    update(48, 48)
    assert len(stream.getvalue().splitlines()) == 6  # a finished step stays quiet


def test_a_reused_callback_reports_its_second_pass() -> None:
    stream, clock = io.StringIO(), FakeClock()
    update = PlainProgress(stream, every=5.0, clock=clock).task("quantize")
    for done in (1, 2):
        clock.now += 1
        update(done, 2)
    for done in (1, 2, 3):
        clock.now += 1
        update(done, 3)
    assert stream.getvalue().splitlines()[-1] == "quantize: 3/3 (100%) 3.0 s"


def test_formats() -> None:
    assert fmt_seconds(3.14) == "3.1 s" and fmt_seconds(245) == "4 min 05 s"
    assert fmt_seconds(3720) == "1 h 02 min"
    # no estimate before an item
    assert progress_line("x", 0, 10, elapsed=1.0) == "x: 0/10 (0%) 1.0 s"


def test_quantize_without_a_terminal_says_its_method_and_prints_progress(tmp_path: Path) -> None:
    mfmaccel = Path(sys.executable).with_name("mfmaccel")
    done = subprocess.run(
        [str(mfmaccel), "quantize", "--model", "tiny-llama", "--out", str(tmp_path / "q"),
         "--uniform", "int4-g128", "--method", "rtn"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "round to nearest" in done.stdout and "--method gptq" in done.stdout
    lines = [m for m in map(LINE.match, done.stderr.splitlines()) if m]
    assert lines, done.stderr
    assert all(m["label"] == "rtn int4-g128" for m in lines)
    assert lines[-1]["done"] == lines[-1]["total"]  # the step's end is always reported
    assert "\x1b[" not in done.stderr  # plain text, no terminal control codes
