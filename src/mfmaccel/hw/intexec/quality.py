"""How close integer-only execution stays to float, on real text: sentence embeddings for an
encoder, perplexity and next-token agreement for a decoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mfmaccel.data.text import load_text_corpus
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import CAUSAL_LM, ENCODER, LoadedModel
from mfmaccel.records import Record


@dataclass
class EmbeddingAgreement(Record):
    model: str
    sentences: int
    calibration_sentences: int
    per_token: bool  # context and GELU output with per-token power-of-two scales
    mean_cosine: float
    min_cosine: float


def corpus_sentences(split: str, count: int, min_words: int = 6) -> list[str]:
    """Paragraphs of the offline text corpus with at least `min_words` words, in order."""
    paragraphs = [" ".join(p.split()) for p in load_text_corpus(split).split("\n\n")]
    chosen = [p for p in paragraphs if len(p.split()) >= min_words][:count]
    if len(chosen) < count:
        raise UserInputError(f"the {split} corpus has only {len(chosen)} usable paragraphs")
    return chosen


def _batches(tokenizer, texts: list[str], size: int = 16, max_length: int = 128):
    return [dict(tokenizer(texts[i:i + size], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt"))
            for i in range(0, len(texts), size)]


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers makes them: masked mean, unit length."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


@torch.inference_mode()
def encoder_agreement(model: LoadedModel, sentences: int = 128, calibration: int = 64,
                      per_token: bool = True) -> EmbeddingAgreement:
    """Cosine similarity of integer-only and float sentence embeddings on the corpus's test
    half, the integer program calibrated on its train half."""
    from mfmaccel.hw.intexec.bert import convert_bert

    if model.kind != ENCODER:
        raise UserInputError(f"{model.name} is not an encoder; try minilm-l6")
    program = convert_bert(model.module,
                           _batches(model.tokenizer, corpus_sentences("train", calibration)),
                           per_token)
    cosines = []
    for batch in _batches(model.tokenizer, corpus_sentences("test", sentences)):
        mask = batch["attention_mask"]
        reference = mean_pooled(model.module(**batch).last_hidden_state.double(), mask)
        integer = mean_pooled(program(batch["input_ids"], mask).double() * program.scale_out,
                              mask)
        cosines.append((reference * integer).sum(-1))
    cosine = torch.cat(cosines)
    return EmbeddingAgreement(model.name, len(cosine), calibration, per_token,
                              float(cosine.mean()),
                              float(cosine.min()))


@dataclass
class DecoderAgreement(Record):
    model: str
    tokens: int  # scored on the corpus's test half
    calibration_tokens: int  # from its train half
    context: int
    per_token: bool  # GEMM inputs with per-token power-of-two scales
    float_ppl: float
    integer_ppl: float
    ppl_change: float  # integer / float - 1
    next_token_agreement: float  # share of positions where both predict the same token


@torch.inference_mode()
def decoder_agreement(model: LoadedModel, tokens: int = 2048, calibration: int = 2048,
                      context: int = 256, per_token: bool = True) -> DecoderAgreement:
    """Perplexity of the integer-only program against float on the same windows of the
    corpus's test half, and how often their next-token predictions agree."""
    from mfmaccel.compress.calibration import calibration_batches
    from mfmaccel.hw.intexec.llama import convert_llama

    if model.kind != CAUSAL_LM:
        raise UserInputError(f"{model.name} is not a causal LM; try smollm2-135m")
    program = convert_llama(model.module,
                            calibration_batches(model.tokenizer, calibration, context), context,
                            per_token=per_token)
    ids = model.tokenizer(load_text_corpus("test"), return_tensors="pt",
                          add_special_tokens=False).input_ids[0][: tokens + 1]
    nll = {"float": 0.0, "integer": 0.0}
    agree, scored = 0, 0
    for start in range(0, len(ids) - 1, context):
        window = ids[start:start + context + 1]
        inputs, targets = window[:-1][None], window[1:]
        logits = {"float": model.module(input_ids=inputs).logits[0].double(),
                  "integer": program(inputs)[0].double() * program.logit_scale}
        for name, value in logits.items():
            nll[name] += float(torch.nn.functional.cross_entropy(value, targets, reduction="sum"))
        agree += int((logits["float"].argmax(-1) == logits["integer"].argmax(-1)).sum())
        scored += len(targets)
    float_ppl, integer_ppl = (math.exp(nll[k] / scored) for k in ("float", "integer"))
    return DecoderAgreement(model.name, scored, calibration, context, per_token, float_ppl,
                            integer_ppl, integer_ppl / float_ppl - 1, agree / scored)
