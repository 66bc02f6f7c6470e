"""How close integer-only execution stays to float, on real text: sentence embeddings for an
encoder, perplexity and next-token agreement for a decoder, medical VQA accuracy for a VLM whose
vision tower runs integer-only.

Each takes two optional `progress(done, total)` callbacks: `calibration_progress` for the
float calibration passes the integer program is built from, `progress` for what is then scored
(windows, sentence batches, or questions, float and integer). They only count; the figures are
the same with or without them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import torch

from mfmaccel.data.text import load_text_corpus
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import CAUSAL_LM, ENCODER, VLM, LoadedModel
from mfmaccel.models.views import shallow_copy
from mfmaccel.records import Record

if TYPE_CHECKING:
    from mfmaccel.data.medvqa import VQASample
    from mfmaccel.evaluate.vqa import VQAResult

Progress = Callable[[int, int], None] | None
Item = TypeVar("Item")


class _Reported(list):
    """A list that tells `progress` each time its reader has finished with an item (asks for
    the next one, or ends): what a converter's calibration pass has got through."""

    def __init__(self, items: Sequence, progress: Callable[[int, int], None]) -> None:
        super().__init__(items)
        self.progress = progress

    def __iter__(self) -> Iterator:
        for done, item in enumerate(super().__iter__(), 1):
            yield item
            self.progress(done, len(self))


def reported(items: Sequence[Item], progress: Progress) -> Sequence[Item]:
    """`items`, counted to `progress` as they are read (unchanged when there is none)."""
    return items if progress is None else _Reported(items, progress)


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


def sentence_batches(tokenizer, texts: list[str], size: int = 16,
                     max_length: int = 128) -> list[dict[str, torch.Tensor]]:
    """Padded batches of `texts` for an encoder (attention masks mark the padding)."""
    return [dict(tokenizer(texts[i:i + size], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt"))
            for i in range(0, len(texts), size)]


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers makes them: masked mean, unit length."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


@torch.inference_mode()
def encoder_agreement(model: LoadedModel, *, sentences: int = 128, calibration: int = 64,
                      per_token: bool = True, calibration_progress: Progress = None,
                      progress: Progress = None) -> EmbeddingAgreement:
    """Cosine similarity of integer-only and float sentence embeddings on the corpus's test
    half, the integer program calibrated on its train half."""
    from mfmaccel.hw.intexec.bert import convert_bert

    if model.kind != ENCODER:
        raise UserInputError(f"{model.name} is not an encoder; try minilm-l6")
    calibration_text = corpus_sentences("train", calibration)
    program = convert_bert(model.module, reported(
        sentence_batches(model.tokenizer, calibration_text), calibration_progress), per_token)
    cosines = []
    for batch in reported(sentence_batches(model.tokenizer, corpus_sentences("test", sentences)),
                          progress):
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
    tokens: int  # scored on `split`
    calibration_tokens: int  # from the start of the corpus's train half
    context: int
    per_token: bool  # GEMM inputs with per-token power-of-two scales
    float_ppl: float
    integer_ppl: float
    ppl_change: float  # integer / float - 1
    next_token_agreement: float  # share of positions where both predict the same token
    split: str = "test"
    alpha: float = 0.0  # SmoothQuant's migration strength


# "validation": train-half tokens from here on, far past any calibration window (for choosing
# settings without the test half)
VALIDATION_START = 60_000


def scored_ids(tokenizer, split: str, tokens: int) -> torch.Tensor:
    """`tokens` + 1 token ids to score on: the test half, or a validation slice of the train
    half that calibration does not reach."""
    if split not in ("test", "validation"):
        raise UserInputError(f"unknown split {split!r}; choose test or validation")
    text = load_text_corpus("test" if split == "test" else "train")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    start = VALIDATION_START if split == "validation" else 0
    if len(ids) < start + tokens + 1:
        raise UserInputError(f"the {split} text has {len(ids) - start} tokens; score fewer")
    return ids[start:start + tokens + 1]


@torch.inference_mode()
def decoder_agreement(model: LoadedModel, *, tokens: int = 2048, calibration: int = 2048,
                      context: int = 256, per_token: bool = True, split: str = "test",
                      alpha: float | None = None, calibration_progress: Progress = None,
                      progress: Progress = None) -> DecoderAgreement:
    """Perplexity of the integer-only program against float on the same windows of `split`,
    and how often their next-token predictions agree; `alpha` overrides the program's
    smoothing strength (`LLAMA_SMOOTHING`)."""
    from mfmaccel.compress.calibration import calibration_batches
    from mfmaccel.hw.intexec.llama import LLAMA_SMOOTHING, convert_llama

    if model.kind != CAUSAL_LM:
        raise UserInputError(f"{model.name} is not a causal LM; try smollm2-135m")
    if calibration > VALIDATION_START and split == "validation":
        raise UserInputError(f"calibrating on {calibration} tokens would reach the validation "
                             f"slice; use at most {VALIDATION_START}")
    ids = scored_ids(model.tokenizer, split, tokens)
    alpha = LLAMA_SMOOTHING if alpha is None else alpha
    windows = calibration_batches(model.tokenizer, calibration, context)
    program = convert_llama(model.module, reported(windows, calibration_progress),
                            max_length=context, alpha=alpha, per_token=per_token)
    nll = {"float": 0.0, "integer": 0.0}
    agree, scored = 0, 0
    for start in reported(range(0, len(ids) - 1, context), progress):
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
                            integer_ppl, integer_ppl / float_ppl - 1, agree / scored, split,
                            alpha)


@dataclass
class VisionAgreement(Record):
    model: str
    questions: int  # test questions of the benchmark the VLM was adapted on
    calibration_images: int  # from its train split
    per_token: bool  # attention context and GELU output with per-token power-of-two scales
    float_accuracy: float
    integer_accuracy: float
    accuracy_change: float  # integer - float, in accuracy (1.0 = 100 points)
    float_per_type: dict[str, float]
    integer_per_type: dict[str, float]
    feature_cosine: float  # mean cosine of the image tokens the projector receives
    benchmark: str = "medvqa"  # medvqa (medvlm-v1) or medvqa2 (medvlm on DINOv2)
    tower: str = ""  # the tower's class: which integer program ran


def integer_tower(tower: torch.nn.Module, calibration: Sequence[torch.Tensor],
                  per_token: bool = True, *, weight_bits: Mapping[str, int] | None = None
                  ) -> torch.nn.Module:
    """A drop-in integer-only stand-in for a LLaVA `vision_tower`, its program chosen by the
    tower's type: a DINOv2 (medvlm) or a ViT-Hybrid (medvlm-v1), calibrated on `calibration`
    (batches of processed pixel values); `weight_bits`: a DINOv2's linears given fewer weight
    bits, by name (`dinov2.convert_dinov2`)."""
    from transformers import Dinov2Model

    from mfmaccel.hw.intexec.dinov2 import convert_dinov2
    from mfmaccel.hw.intexec.vit import IntegerTower, convert_vit

    if isinstance(tower, Dinov2Model):
        program = convert_dinov2(tower, calibration, per_token, weight_bits=weight_bits)
    elif weight_bits:
        raise UserInputError("weight bits per linear are for a DINOv2 tower (medvlm); "
                             "medvlm-v1's ViT-Hybrid program keeps int8 weights")
    else:
        program = convert_vit(tower, calibration, per_token)
    return IntegerTower(program, tower.config.patch_size)


def benchmark_splits(model: LoadedModel, calibration: int
                     ) -> tuple[str, list[VQASample], list[VQASample]]:
    """(benchmark, `calibration` train samples, test samples) of the benchmark `model` was
    adapted on: medvqa2 for medvlm (its manifest says so), medvqa otherwise."""
    from mfmaccel.data.medvqa import load_benchmark

    benchmark = model.meta.get("benchmark", "medvqa")
    test = load_benchmark(benchmark, "test")
    if benchmark == "medvqa2":  # a seeded shuffle: its first images are spread over the types
        return benchmark, load_benchmark(benchmark, "train", limit=calibration), test
    train = load_benchmark(benchmark, "train")  # medvqa-v1's records: a strided subset
    return benchmark, train[:: max(1, len(train) // calibration)][:calibration], test


def calibration_pixels(model: LoadedModel, calibration: int) -> torch.Tensor:
    """Processed pixel values of the `calibration` train images an integer tower is built
    from (`benchmark_splits`)."""
    from mfmaccel.finetune.data import pixel_tensor

    _, chosen, _ = benchmark_splits(model, calibration)
    return pixel_tensor(model.processor, [s.image for s in chosen])


@torch.inference_mode()
def vision_agreement(model: LoadedModel, *, questions: int = 0, calibration: int = 64,
                     per_token: bool = True, weight_bits: Mapping[str, int] | None = None,
                     stand_in: torch.nn.Module | None = None,
                     reference: VQAResult | None = None, calibration_progress: Progress = None,
                     progress: Progress = None) -> VisionAgreement:
    """Medical VQA accuracy (ranked answers, test split of the benchmark the VLM was adapted
    on) of the VLM with its float tower and with the integer-only program of that tower,
    calibrated on train images; `questions` > 0 takes a type-balanced subset; `weight_bits`:
    the tower's linears given fewer weight bits (`integer_tower`). `stand_in`: an integer
    tower built before (`integer_tower` on `calibration` train images, with `per_token`), used
    instead of building one; `reference`: the float VLM's result on these same questions,
    scored before, used instead of scoring it again (then `progress` counts one pass)."""
    from mfmaccel.evaluate.vqa import vqa_accuracy
    from mfmaccel.finetune.data import pixel_tensor, val_subset

    if model.kind != VLM:
        raise UserInputError(f"{model.name} is not a vision-language model; try medvlm")
    tower = model.module.model.vision_tower
    benchmark, chosen, test = benchmark_splits(model, calibration)
    if stand_in is None:
        pixels = pixel_tensor(model.processor, [s.image for s in chosen])
        stand_in = integer_tower(tower, reported(list(pixels.split(16)), calibration_progress),
                                 per_token, weight_bits=weight_bits)
    elif weight_bits:
        raise UserInputError("weight bits are the prebuilt tower's own; give one or the other")
    test = val_subset(test, questions) if questions else test
    if reference is not None and reference.n != len(test):
        raise UserInputError(f"the float result scored {reference.n} questions, not these "
                             f"{len(test)}; score it on the same questions")
    integer_model = with_tower(model, stand_in)
    scored = reference is None
    if scored:
        reference = vqa_accuracy(model, test, progress=_half(progress, 0))
    integer = vqa_accuracy(integer_model, test,
                           progress=_half(progress, 1) if scored else progress)
    pixels = pixel_tensor(model.processor, [s.image for s in test[:64]])
    return VisionAgreement(
        model.name, len(test), len(chosen), per_token, reference.accuracy, integer.accuracy,
        integer.accuracy - reference.accuracy, reference.per_type, integer.per_type,
        feature_cosine(tower, stand_in, pixels), benchmark, type(tower).__name__)


def _half(progress: Progress, index: int) -> Progress:
    """Questions scored in pass `index` (0 float, 1 integer) as a count over both passes."""
    if progress is None:
        return None
    return lambda done, total: progress(index * total + done, 2 * total)


def with_tower(model: LoadedModel, tower: torch.nn.Module) -> LoadedModel:
    """`model` (a LLaVA VLM) with another vision tower; the original is untouched (the
    submodule tables are copied, every other weight is shared)."""
    module = model.module
    outer, inner = shallow_copy(module), shallow_copy(module.model)
    inner._modules["vision_tower"] = tower
    outer._modules["model"] = inner
    return replace(model, module=outer)


def feature_cosine(tower: torch.nn.Module, integer_tower: torch.nn.Module,
                   pixels: torch.Tensor) -> float:
    """Mean cosine between float and integer last hidden states, token by token."""
    integer = integer_tower(pixels).hidden_states[-1].double()
    reference = tower(pixels, output_hidden_states=True).hidden_states[-1].double()
    return float(torch.nn.functional.cosine_similarity(reference, integer, dim=-1).mean())
