"""`hw.intexec.agreement`: a model named by spec measured by the agreement that fits its kind."""

from __future__ import annotations

from mfmaccel.hw.intexec.agreement import agreement_for_spec
from mfmaccel.hw.intexec.quality import DecoderAgreement, EmbeddingAgreement


def test_a_decoder_gets_perplexity_an_encoder_embedding_cosine(step_recorder) -> None:
    labels, progress = step_recorder
    decoder = agreement_for_spec("tiny-llama", tokens=96, calibration_tokens=96, context=48,
                                 progress=progress)
    assert isinstance(decoder, DecoderAgreement) and labels == ["calibration", "scoring"]
    encoder = agreement_for_spec("tiny-bert", sentences=8, calibration=8, per_token=False)
    assert isinstance(encoder, EmbeddingAgreement)
    assert encoder.sentences == 8 and not encoder.per_token
