"""Where mfmaccel keeps what it makes once and reuses: converted weights, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where converted weights live: `$MFMACCEL_CACHE`, else `~/.cache/mfmaccel`."""
    return Path(os.environ.get("MFMACCEL_CACHE", "~/.cache/mfmaccel")).expanduser()
