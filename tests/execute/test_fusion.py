"""Operator fusion on tiny real architectures: same tokens, logits within 1e-4 relative, through
every runtime path, composed with pruning, quantization and speculative decoding."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.prune import prune_model
from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.decode.drafts import ModelDraft, int8_copy
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import answer_scores
from mfmaccel.execute.fusion import fuse
from mfmaccel.execute.fusion_packed import PackedLinear, packing_available, prepacked
from mfmaccel.models import load_model
from mfmaccel.runtime.anatomy import decoder_layers
from mfmaccel.runtime.engine import generate_batch, greedy_generate
from mfmaccel.runtime.fewrows import FewRowsLinear
from mfmaccel.runtime.grid import INT8_PER_CHANNEL
from mfmaccel.runtime.linear import QuantLinear
from tests.evaluate.test_vqa import make_sample

RELATIVE = 1e-4


def _perturbed(name: str):
    """A tiny model whose norm weights and biases are not the init's ones and zeros, so folding
    and bias stacking have something to get wrong."""
    model = load_model(name)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, param in model.module.named_parameters():
            if pname.endswith("norm.weight") or pname.endswith("proj.bias"):
                param.copy_(param + 0.5 * torch.randn(param.shape, generator=generator))
    return model


def _ids(length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 250, (1, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids, **inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model.module(input_ids=ids, **inputs).logits


def _assert_close(reference: torch.Tensor, fused: torch.Tensor) -> None:
    assert float((reference - fused).abs().max()) <= RELATIVE * float(reference.abs().max())


def _assert_same_model(model, fused) -> None:
    ids = _ids()
    _assert_close(_logits(model, ids), _logits(fused, ids))
    assert greedy_generate(fused.module, ids, 16).tokens == \
        greedy_generate(model.module, ids, 16).tokens


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_fused_model_gives_the_same_logits_and_greedy_tokens(name):
    model = _perturbed(name)
    reference = _logits(model, _ids())
    fused = fuse(model)
    report = fused.meta["fusion"]
    blocks = len(decoder_layers(model.module))
    assert report["qkv_fused"] == report["gate_up_fused"] == blocks
    assert report["norms_folded"] == 2 * blocks and not report["left_apart"]
    assert report["prepacked"] == (4 * blocks if packing_available() else 0)
    _assert_same_model(model, fused)
    # the input model is untouched: its own blocks, the same outputs
    assert type(decoder_layers(model.module)[0]).__name__.endswith("DecoderLayer")
    assert torch.equal(_logits(model, _ids()), reference)


def test_without_prepacking_the_stacked_products_stay_few_rows_linears():
    model = _perturbed("tiny-qwen2")
    fused = fuse(model, prepack=False)
    block = decoder_layers(fused.module)[0]
    assert isinstance(block.self_attn.qkv_proj.fused, FewRowsLinear)
    assert isinstance(block.mlp.gate_up_proj.fused, FewRowsLinear)
    assert fused.meta["fusion"]["prepacked"] == 0
    _assert_same_model(model, fused)


@pytest.mark.parametrize("prepack", [True, False])
def test_batched_cached_decode_matches_through_the_few_rows_path(prepack):
    model = _perturbed("tiny-qwen2")
    fused = fuse(model, prepack=prepack)
    prompts = [_ids(n, seed=n)[0].tolist() for n in (7, 12, 19)]  # left-padded: masks matter
    settings = {"max_new_tokens": 10, "pad_token_id": 0}
    assert generate_batch(fused.module, prompts, **settings) == \
        generate_batch(model.module, prompts, **settings)


@pytest.mark.skipif(not packing_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_packed_linear_matches_linear_with_its_bias_and_keeps_autograd(rows):
    plain = FewRowsLinear(48, 24)
    packed = prepacked(plain)
    assert isinstance(packed, PackedLinear) and packed.weight is plain.weight
    x = torch.randn(2, rows, 48)
    with torch.inference_mode():
        assert torch.allclose(packed(x), plain(x), rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    packed(x).sum().backward()  # training falls back to the plain product
    assert x.grad is not None and "packed" not in packed.state_dict()


def test_llava_language_model_fused_scores_answers_alike(tiny_llava):
    fused = fuse(tiny_llava)
    assert fused.meta["fusion"]["qkv_fused"] == len(decoder_layers(tiny_llava.module))
    assert fused.module.model.vision_tower is tiny_llava.module.model.vision_tower
    sample = make_sample(answers=("yes", "no", "left upper lobe"))
    assert answer_scores(fused, sample) == pytest.approx(answer_scores(tiny_llava, sample),
                                                         abs=1e-4)


def test_int8_model_fuses_its_packed_integers():
    model = _perturbed("tiny-llama")
    quantize_model(model, uniform_plan(model.module, INT8_PER_CHANNEL))
    fused = fuse(model)
    report = fused.meta["fusion"]
    blocks = len(decoder_layers(model.module))
    assert report["packed_fused"] == 2 * blocks
    assert report["norms_folded"] == 0  # integers cannot absorb a column scale exactly
    qkv = decoder_layers(fused.module)[0].self_attn.qkv_proj.fused
    assert isinstance(qkv, QuantLinear) and qkv.spec == INT8_PER_CHANNEL
    _assert_same_model(model, fused)


def test_mixed_specs_stay_apart_and_still_match():
    model = _perturbed("tiny-llama")
    plan = uniform_plan(model.module, INT8_PER_CHANNEL)
    plan.choice["layers.0.self_attn.k_proj"] = "fp16"
    quantize_model(model, plan)
    fused = fuse(model)
    report = fused.meta["fusion"]
    assert report["qkv_fused"] == len(decoder_layers(model.module)) - 1
    assert report["left_apart"] == [
        "block 0 qkv: layers of different kinds or quantization specs"]
    _assert_same_model(model, fused)


def test_pruned_model_fuses_with_its_narrower_widths():
    model = _perturbed("tiny-llama")
    batches = [_ids(32, seed=s) for s in range(2)]
    prune_model(model, batches, mlp_fraction=0.25, kv_groups=1)
    fused = fuse(model)
    widths = decoder_layers(fused.module)[0].self_attn.qkv_proj.widths
    assert widths[1] == widths[2] < widths[0]  # one kv group left: GQA's unequal widths
    _assert_same_model(model, fused)


def test_fused_target_verifies_speculative_drafts_exactly():
    model = _perturbed("tiny-llama")
    fused = fuse(model)
    prompt = _ids(16)[0].tolist()
    plain = greedy_generate(model.module, torch.tensor([prompt]), 12).tokens
    for draft in (ModelDraft(fuse(load_model("tiny-llama", seed=3)).module),
                  ModelDraft(int8_copy(fused.module), shares_target_cache=True)):
        out = speculative_generate(fused.module, draft, prompt, max_new_tokens=12, gamma=3)
        assert out.tokens == plain


@pytest.mark.parametrize("name", ["tiny-gpt2"])  # bert: fused by fusion_encoder
def test_unknown_architecture_is_refused_by_name(name):
    model = load_model(name)
    with pytest.raises(UserInputError, match=f"{model.family}.*llama, qwen2, llava"):
        fuse(model)


def test_fusing_twice_is_refused(tiny_llama):
    with pytest.raises(UserInputError, match="already fused"):
        fuse(fuse(tiny_llama))


def test_generate_and_eval_fuse_on_request() -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    runner = CliRunner()
    args = ["generate", "--model", "tiny-llama", "--prompt", "def f(x):", "--max-new-tokens", "8"]
    plain, fused = runner.invoke(app, args), runner.invoke(app, [*args, "--fuse"])
    assert fused.exit_code == 0, fused.output
    assert fused.stdout == plain.stdout
    refused = runner.invoke(app, ["generate", "--model", "tiny-gpt2", "--prompt", "a",
                                  "--fuse"])
    assert refused.exit_code == 2 and "gpt2" in refused.output


def test_eval_fuses_on_request(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from mfmaccel.cli import app

    scores = {}
    for flags in ([], ["--fuse"]):
        out = tmp_path / f"e{len(flags)}.json"
        done = CliRunner().invoke(app, ["eval", "--model", "tiny-llama", "--task", "ppl",
                                        "--max-tokens", "64", "--out", str(out), *flags])
        assert done.exit_code == 0, done.output
        scores[len(flags)] = json.loads(out.read_text())["perplexity"]
    assert abs(scores[1] - scores[0]) <= 1e-3 * scores[0]
