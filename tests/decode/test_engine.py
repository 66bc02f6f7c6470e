"""Our greedy loop produces exactly what Hugging Face `generate` produces."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.models import load_model
from mfmaccel.runtime.engine import eos_ids, generate_batch, greedy_generate, sample_rows
from mfmaccel.runtime.sampling import Sampling


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_greedy_matches_hf_generate(arch: str) -> None:
    model = load_model(f"tiny-{arch}")
    ids = model.tokenizer("The quick brown fox", return_tensors="pt").input_ids
    ours = greedy_generate(model.module, ids, 24)
    with torch.inference_mode():
        theirs = model.module.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)
    assert ours.tokens == theirs[0, ids.shape[1]:].tolist()
    assert ours.decode_tokens_per_s > 0 and ours.prefill_seconds > 0


def test_stops_at_eos_and_on_request(tiny_llama) -> None:
    ids = tiny_llama.tokenizer("abc", return_tensors="pt").input_ids
    free = greedy_generate(tiny_llama.module, ids, 10)
    stopped = greedy_generate(tiny_llama.module, ids, 10, eos_token_ids={free.tokens[2]})
    assert stopped.tokens == free.tokens[: free.tokens.index(free.tokens[2]) + 1]
    early = greedy_generate(tiny_llama.module, ids, 10, should_stop=lambda t: len(t) >= 4)
    assert early.tokens == free.tokens[:4]


def test_vlm_prefill_inputs(tiny_llava) -> None:
    from PIL import Image

    inputs = dict(tiny_llava.processor(images=Image.new("RGB", (40, 40), "white"),
                                       text="<image> what?", return_tensors="pt"))
    out = greedy_generate(tiny_llava.module, inputs.pop("input_ids"), 5, **inputs)
    assert len(out.tokens) == 5


def test_eos_ids_collects_config_and_tokenizer(tiny_llama) -> None:
    assert tiny_llama.tokenizer.eos_token_id in eos_ids(tiny_llama.module, tiny_llama.tokenizer)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_batched_greedy_equals_one_at_a_time(arch: str) -> None:
    model = load_model(f"tiny-{arch}")
    texts = ["hi", "The quick brown fox jumps over", "def f(x): return"]
    prompts = [model.tokenizer(t).input_ids for t in texts]
    batched = generate_batch(model.module, prompts, max_new_tokens=16,
                             pad_token_id=model.tokenizer.pad_token_id)
    single = [greedy_generate(model.module, torch.tensor([p]), 16).tokens for p in prompts]
    assert batched == single


def test_batched_rows_stop_independently(tiny_llama) -> None:
    prompts = [tiny_llama.tokenizer(t).input_ids for t in ["abc", "a much longer prompt"]]
    free = generate_batch(tiny_llama.module, prompts, max_new_tokens=12, pad_token_id=0)
    stopped = generate_batch(tiny_llama.module, prompts, max_new_tokens=12, pad_token_id=0,
                                    row_done=lambda tokens: len(tokens) >= 5)
    assert [len(t) for t in stopped] == [5, 5]
    assert [t[:5] for t in free] == stopped


def test_rows_left_behind_decode_as_if_alone() -> None:
    """A finished row leaves the batch (its cache rows dropped); the others must not notice."""
    model = load_model("tiny-qwen2")
    texts = ["hi", "The quick brown fox jumps over", "def f(x): return"]
    prompts = [model.tokenizer(t).input_ids for t in texts]
    free = generate_batch(model.module, prompts, max_new_tokens=16,
                          pad_token_id=model.tokenizer.pad_token_id)
    assert free[1][:4] != free[0][:4] != free[2][:4]
    early = generate_batch(model.module, prompts, max_new_tokens=16,
                           pad_token_id=model.tokenizer.pad_token_id,
                           row_done=lambda tokens: tokens == free[0][:4])
    assert early == [free[0][:4], free[1], free[2]]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_rows_of_one_prompt_decode_as_the_prompt_alone(arch: str) -> None:
    """The prompt is prefilled once and its cache repeated: greedy, every row is the prompt's
    own greedy continuation, and a row leaving early does not disturb the rest."""
    model = load_model(f"tiny-{arch}")
    prompt = model.tokenizer("The quick brown fox jumps over").input_ids
    alone = greedy_generate(model.module, torch.tensor([prompt]), 12).tokens
    rows = sample_rows(model.module, prompt, count=3, max_new_tokens=12, sampling=Sampling())
    assert rows == [alone] * 3
    calls = iter(range(100))
    early = sample_rows(model.module, prompt, count=3, max_new_tokens=12, sampling=Sampling(),
                        row_done=lambda tokens: len(tokens) >= 4 and next(calls) == 0)
    assert early == [alone[:4], alone, alone]


def test_sampled_rows_differ_and_repeat_with_their_seed(tiny_llama) -> None:
    prompt = tiny_llama.tokenizer("abc").input_ids
    hot = Sampling(temperature=1.5, seed=7)
    rows = sample_rows(tiny_llama.module, prompt, count=4, max_new_tokens=10, sampling=hot)
    assert len({tuple(r) for r in rows}) > 1
    assert sample_rows(tiny_llama.module, prompt, count=4, max_new_tokens=10,
                       sampling=hot) == rows
