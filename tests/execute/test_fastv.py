"""Image-token dropping (FastV) on tiny-llava: exact at keep=1, equal to a hand-run reference
that ranks by eager attention weights and runs the later layers on the kept rows, a real cut
in tokens and cache, and the normal evaluation paths still running."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from transformers import DynamicCache

from mfmaccel.data.medvqa import VQASample
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import answer_scores, generate_answer, prompt_inputs
from mfmaccel.execute.fastv import with_image_token_dropping
from mfmaccel.models import load_model
from mfmaccel.runtime.anatomy import decoder_layers


def make_sample() -> VQASample:
    image = Image.effect_noise((32, 32), 60).convert("RGB")
    return VQASample(image=image, question="Is there a lesion?", answer="yes",
                     question_type="presence", answer_set=["yes", "no", "maybe not"],
                     source_id="synthetic", split="test")


@pytest.fixture(scope="module")
def eager_llava():
    """tiny-llava (same seed as the shared fixture) with eager attention, whose weights the
    reference reads."""
    model = load_model("tiny-llava")
    model.module.set_attn_implementation("eager")
    return model


def image_positions(model, ids: torch.Tensor) -> torch.Tensor:
    return (ids[0] == model.module.config.image_token_id).nonzero().flatten()


def reference_kept(model, inputs, *, layer: int, keep: float) -> torch.Tensor:
    """Prompt positions that survive: eager attention of `layer`, mean over heads and over the
    queries after the image, top ceil(keep x n) image tokens, plus every text token."""
    with torch.inference_mode():
        attentions = model.module(**inputs, output_attentions=True).attentions[layer][0]
    ids = inputs["input_ids"]
    images = image_positions(model, ids)
    received = attentions.mean(0)[int(images.max()) + 1:].mean(0)
    top = images[received[images].topk(math.ceil(keep * len(images))).indices]
    kept = torch.ones(ids.shape[1], dtype=torch.bool)
    kept[images] = False
    kept[top] = True
    return kept.nonzero().flatten()


def reference_scores(model, sample, *, layer: int, keep: float) -> list[float]:
    """Each candidate's log-likelihood from one hand-run pass over prompt + candidate, no
    cache: layers <= `layer` on every token, later layers on the kept rows only."""
    inputs = prompt_inputs(model, sample)
    kept = reference_kept(model, inputs, layer=layer, keep=keep)
    prompt_length = inputs["input_ids"].shape[1]
    tokenizer = model.processor.tokenizer
    return [_candidate_score(model, inputs, tokenizer(" " + a, add_special_tokens=False).input_ids,
                             kept, layer=layer, prompt_length=prompt_length)
            for a in sample.answer_set]


@torch.inference_mode()
def _candidate_score(model, inputs, candidate, kept, *, layer, prompt_length) -> float:
    body = model.module.model.language_model
    ids = torch.cat([inputs["input_ids"], torch.tensor([candidate])], dim=1)
    captured = {}
    handle = body.register_forward_pre_hook(
        lambda _m, _a, kw: captured.update(embeds=kw["inputs_embeds"]), with_kwargs=True)
    model.module(input_ids=ids, pixel_values=inputs["pixel_values"])
    handle.remove()
    hidden = captured["embeds"]
    rows = torch.arange(ids.shape[1])
    position_embeddings = body.rotary_emb(hidden, rows[None])
    later = torch.cat([kept, torch.arange(prompt_length, ids.shape[1])])
    for index, block in enumerate(body.layers):
        if index == layer + 1:
            hidden, rows = hidden[:, later], rows[later]
            position_embeddings = tuple(t[:, later] for t in position_embeddings)
        causal = torch.full((len(rows), len(rows)), torch.finfo(hidden.dtype).min).triu(1)
        hidden = block(hidden, attention_mask=causal[None, None],
                       position_embeddings=position_embeddings, position_ids=rows[None])
    logprobs = model.module.lm_head(body.norm(hidden))[0].float().log_softmax(-1)
    start = len(rows) - len(candidate) - 1  # the last prompt row predicts the first token
    return sum(float(logprobs[start + j, token]) for j, token in enumerate(candidate))


def test_keep_one_scores_like_the_plain_model(tiny_llava):
    sample = make_sample()
    plain = answer_scores(tiny_llava, sample)
    for layer in (0, 1):
        kept = answer_scores(with_image_token_dropping(tiny_llava, layer=layer, keep=1.0), sample)
        assert kept == pytest.approx(plain, abs=1e-5)


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_scores_match_a_hand_run_cut(tiny_llava, eager_llava, keep):
    sample = make_sample()
    expected = reference_scores(eager_llava, sample, layer=0, keep=keep)
    plain = answer_scores(tiny_llava, sample)
    for model in (tiny_llava, eager_llava):  # SDPA (bool or no mask) and eager (additive)
        got = answer_scores(with_image_token_dropping(model, layer=0, keep=keep), sample)
        assert got == pytest.approx(expected, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(expected, plain, strict=True)) > 1e-3


def test_later_layers_see_and_cache_fewer_tokens(tiny_llava):
    sample = make_sample()
    inputs = prompt_inputs(tiny_llava, sample)
    length = inputs["input_ids"].shape[1]
    n_image = len(image_positions(tiny_llava, inputs["input_ids"]))
    seen: list[int] = []
    blocks = decoder_layers(tiny_llava.module)
    handles = [b.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[1]))
               for b in blocks]
    dropping = with_image_token_dropping(tiny_llava, layer=0, keep=0.5)
    cache = DynamicCache()
    try:
        with torch.inference_mode():
            dropping.module(**inputs, cache=cache, use_cache=True, logits_to_keep=1)
            dropping.module(input_ids=torch.tensor([[65, 66]]), cache=cache, use_cache=True)
    finally:
        for handle in handles:
            handle.remove()
    cut = length - n_image // 2
    assert seen == [length, cut, 2, 2]
    assert [layer.keys.shape[-2] for layer in cache.layers] == [length + 2, cut + 2]


def test_generation_runs_and_the_input_model_is_untouched(tiny_llava):
    sample = make_sample()
    before = answer_scores(tiny_llava, sample)
    plain_answer = generate_answer(tiny_llava, sample)
    exact = with_image_token_dropping(tiny_llava, layer=0, keep=1.0)
    assert generate_answer(exact, sample) == plain_answer
    assert isinstance(generate_answer(with_image_token_dropping(tiny_llava, layer=0, keep=0.25),
                                      sample), str)
    assert answer_scores(tiny_llava, sample) == before
    assert not tiny_llava.module.model._forward_pre_hooks
    assert all(type(b).__name__ == "LlamaDecoderLayer" for b in decoder_layers(tiny_llava.module))
    assert exact.meta["image_token_dropping"] == {"layer": 0, "keep": 1.0}


@pytest.mark.parametrize(("layer", "keep", "named"), [
    (0, 0.0, "keep ratio"), (0, 1.5, "keep ratio"), (-1, 0.5, "layer"), (2, 0.5, "layer"),
])
def test_bad_settings_name_the_knob(tiny_llava, layer, keep, named):
    with pytest.raises(UserInputError, match=named):
        with_image_token_dropping(tiny_llava, layer=layer, keep=keep)


def test_a_text_model_is_refused(tiny_llama):
    with pytest.raises(UserInputError, match="vision-language"):
        with_image_token_dropping(tiny_llama, layer=0, keep=0.5)


@pytest.mark.slow
@pytest.mark.pretrained
def test_medvlm_scores_medvqa2_questions():
    from mfmaccel.evaluate.run import vqa_samples

    medvlm = load_model("medvlm")
    samples = vqa_samples(None, "test", limit=3, benchmark="medvqa2")
    exact = with_image_token_dropping(medvlm, layer=2, keep=1.0)
    half = with_image_token_dropping(medvlm, layer=2, keep=0.5)
    for sample in samples:
        plain = answer_scores(medvlm, sample)
        assert answer_scores(exact, sample) == pytest.approx(plain, abs=1e-5)
        assert len(answer_scores(half, sample)) == len(sample.answer_set)


@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_dropping_runs_on_fused_blocks_as_on_plain_ones(tiny_llava, keep):
    from mfmaccel.execute.fusion import fuse

    sample = make_sample()
    plain = answer_scores(with_image_token_dropping(tiny_llava, layer=1, keep=keep), sample)
    fused = answer_scores(with_image_token_dropping(fuse(tiny_llava), layer=1, keep=keep),
                          sample)
    assert fused == pytest.approx(plain, abs=1e-4)


def test_fusing_after_dropping_is_refused_with_the_order_that_works(tiny_llava):
    from mfmaccel.execute.fusion import fuse

    dropping = with_image_token_dropping(tiny_llava, layer=1, keep=0.5)
    with pytest.raises(UserInputError, match="image-token dropping applied: fuse first"):
        fuse(dropping)
