"""Integer-only execution of a model named by spec, measured against float by the measure that
fits what it is (`quality`): perplexity and next-token agreement for a decoder, VQA accuracy
for a VLM (its vision tower integer-only), sentence-embedding cosine for an encoder."""

from __future__ import annotations

from mfmaccel.hw.intexec.quality import decoder_agreement, encoder_agreement, vision_agreement
from mfmaccel.models import CAUSAL_LM, VLM, load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.progress import Steps, step
from mfmaccel.records import Record


def agreement_for_spec(
    model_spec: str, *, sentences: int = 128, calibration: int = 64, questions: int = 0,
    tokens: int = 2048, calibration_tokens: int = 2048, context: int = 256,
    per_token: bool = True, progress: Steps | None = None,
) -> Record:
    """How close `model_spec` stays to float when run integer-only. `sentences` and
    `calibration` (paragraphs) are an encoder's; `tokens`, `calibration_tokens` and `context`
    a decoder's; `questions` and `calibration` (images) a VLM's. `progress(label)` gives the
    callbacks of the "calibration" and "scoring" steps."""
    kind = model_kind(model_spec)
    model = load_model(model_spec)
    steps = {"calibration_progress": step(progress, "calibration"),
             "progress": step(progress, "scoring")}
    if kind == CAUSAL_LM:
        return decoder_agreement(model, tokens=tokens, calibration=calibration_tokens,
                                 context=context, per_token=per_token, **steps)
    if kind == VLM:
        return vision_agreement(model, questions=questions, calibration=calibration,
                                per_token=per_token, **steps)
    return encoder_agreement(model, sentences=sentences, calibration=calibration,
                             per_token=per_token, **steps)
