"""Model zoo: `load_model(spec)` returns a `LoadedModel` from a name, folder or GGUF file."""

from mfmaccel.models.loader import known_model_names, load_model
from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION, VLM, LoadedModel
from mfmaccel.models.zoo import BUILTIN_MODELS

__all__ = [
    "BUILTIN_MODELS", "CAUSAL_LM", "ENCODER", "VISION", "VLM", "LoadedModel",
    "known_model_names", "load_model",
]
