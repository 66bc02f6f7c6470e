"""mfmaccel: make multimodal foundation models small and fast on real hardware, end to end."""

import os

# Models load from local folders, GGUF files or packages that ship weights: never from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
