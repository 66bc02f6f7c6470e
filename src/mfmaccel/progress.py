"""Progress as plain log lines, for when nobody watches a terminal (a log file, CI, a pipe).

A long command must not go quiet: without a terminal, each labelled step prints
`sensitivity: 12/48 (25%) 3.1 s, about 9 s left` when its first item is done, then at most
one line every `every` seconds, and always its last. The time left comes from the pace since
the first item (loading and set-up before it would inflate it), so it appears from the second
line on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LINE_EVERY = 5.0  # seconds between two lines of one step


# A long job's progress by named step: given a step's label, the (done, total) callback for it.
Steps = Callable[[str], Callable[[int, int], None] | None]


def step(progress: Steps | None, label: str) -> Callable[[int, int], None] | None:
    """The callback for step `label`, or None when nobody watches."""
    return progress(label) if progress else None


def counter(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None]:
    """A `tick()` that reports one more of `total` items done to `progress` (if any): for a
    loop spread over several functions that each finish some of the items."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def fmt_seconds(seconds: float) -> str:
    """'3.1 s', '4 min 05 s' or '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(label: str, done: int, total: int, *, elapsed: float,
                  per_item: float | None = None) -> str:
    """One step's state: count, share, time so far and, while it runs and its pace is known
    (`per_item` seconds an item), the time left."""
    share = f" ({done / total:.0%})" if total else ""
    line = f"{label}: {done}/{total}{share} {fmt_seconds(elapsed)}"
    if per_item is not None and 0 < done < total:
        line += f", about {fmt_seconds(per_item * (total - done))} left"
    return line


class PlainProgress:
    """Rate-limited progress lines on `stream` (stderr), one step per `task(label)`."""

    def __init__(self, stream: TextIO | None = None, every: float = LINE_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.every, self.clock = stream, every, clock

    def task(self, label: str) -> Callable[[int, int], None]:
        """A `progress(done, total)` callback for one step; its clock starts now. A count that
        goes back (a caller reusing the callback for a second pass) starts a new pass."""
        start = last_call = self.clock()
        last_line: float | None = None
        first: tuple[float, int] | None = None  # when the first item was reported, and count
        finished, last_done = False, 0

        def update(done: int, total: int) -> None:
            nonlocal start, last_call, last_line, first, finished, last_done
            now = self.clock()
            if done < last_done:  # the new pass began about when the old one last reported
                start, last_line, first, finished = last_call, None, None, False
            last_call, last_done = now, done
            if first is None and done > 0:
                first = (now, done)
            ending = total > 0 and done >= total
            due = done > 0 and (last_line is None or now - last_line >= self.every)
            if finished or not (ending or due):
                return
            # after the first item, the pace excludes what came before it (loading, set-up)
            per_item = ((now - first[0]) / (done - first[1])
                        if first is not None and done > first[1] else None)
            stream = self.stream or sys.stderr
            stream.write(progress_line(label, done, total, elapsed=now - start,
                                       per_item=per_item) + "\n")
            stream.flush()
            last_line, finished = now, ending

        return update
