"""mfmaccel: make multimodal foundation models small and fast on real hardware, end to end."""

__version__ = "0.1.0"
