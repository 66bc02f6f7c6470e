"""Untied token embeddings (Qwen2.5-Coder-0.5B's layout) are a part like any other: measured,
searched, quantized to a packed table, saved and reloaded to identical outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers as tf

from mfmaccel.compress.calibration import calibrate_activations
from mfmaccel.compress.mixed import MixedSearch
from mfmaccel.compress.quantize import quantize_model, storage_bytes, uniform_plan
from mfmaccel.compress.sensitivity import measure_sensitivity
from mfmaccel.models import load_model
from mfmaccel.models.loader import save_model
from mfmaccel.runtime.embedding import QuantEmbedding
from mfmaccel.runtime.grid import QuantSpec, dequantize, quantize_rtn
from mfmaccel.runtime.parts import EMBED, quantizable_parts
from mfmaccel.runtime.plan import QuantPlan


def _untied_qwen2():
    """tiny-qwen2 with its embeddings and head as separate tables."""
    tied = load_model("tiny-qwen2")
    config = tied.module.config
    config.tie_word_embeddings = False
    torch.manual_seed(1)
    module = tf.Qwen2ForCausalLM(config).eval()
    return dataclasses.replace(tied, module=module)


def _batches():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 250, (1, 40), generator=generator) for _ in range(2)]


def _logits(model, ids):
    with torch.inference_mode():
        return model.module(input_ids=ids).logits


def test_untied_embeddings_are_a_part_and_tied_ones_are_not():
    assert EMBED in quantizable_parts(_untied_qwen2().module)
    assert EMBED not in quantizable_parts(load_model("tiny-qwen2").module)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_packed_embeddings_save_and_reload_to_identical_outputs(method, tmp_path):
    model = _untied_qwen2()
    table = model.module.get_input_embeddings().weight.detach().clone()
    full_bytes = storage_bytes(model.module)
    spec = QuantSpec(4, 16)
    quantize_model(model, uniform_plan(model.module, spec, method), _batches())
    embed = model.module.get_input_embeddings()
    assert isinstance(embed, QuantEmbedding)
    ids = torch.randint(0, 250, (1, 24))
    expected = dequantize(quantize_rtn(table.float(), spec))[ids]  # rounded to fp16 first
    assert torch.allclose(embed(ids), expected, atol=1e-2)
    assert storage_bytes(model.module) < 0.4 * full_bytes  # 6 of 16 bits, the tables too
    reloaded = load_model(str(save_model(model, tmp_path / "q")))
    assert isinstance(reloaded.module.get_input_embeddings(), QuantEmbedding)
    assert torch.equal(_logits(model, ids), _logits(reloaded, ids))
    assert reloaded.weight_bytes == model.weight_bytes


def test_int8_table_reads_only_the_rows_it_needs_and_takes_no_int8_activations():
    model = _untied_qwen2()
    parts = len(quantizable_parts(model.module))
    quantize_model(model, uniform_plan(model.module, QuantSpec(8, None, True)))
    embed = model.module.get_input_embeddings()
    ids = torch.tensor([[3, 7, 7, 200]])
    assert torch.equal(embed(ids), embed.dequantized_weight()[ids])
    assert embed._weight is None  # no fp32 table kept
    layers = calibrate_activations(model.module, "token")
    assert embed.activations is None and layers == parts - 1  # all but the lookup


def test_sensitivity_and_search_cover_the_embeddings():
    model = _untied_qwen2()
    specs = [QuantSpec(2, 16), QuantSpec(4, 16)]
    sensitivity = measure_sensitivity(model.module, _batches(), specs)
    low, high = (sensitivity.blocks[EMBED][s.label] for s in specs)
    assert low > high > 0
    assert sensitivity.modules[EMBED] == sensitivity.blocks[EMBED]
    parts = {n: p for n, (p, _) in quantizable_parts(model.module).items()}
    search = MixedSearch(parts, sensitivity)
    point = search.by_module(0.3 * search.full_bytes())
    assert point.choice[EMBED] != "fp16"
    plan = QuantPlan(point.choice, sensitivity.specs, "gptq")
    quantize_model(model, plan, _batches())
    assert isinstance(model.module.get_input_embeddings(), QuantEmbedding)


def test_an_encoder_without_a_head_is_measured_by_cosine_and_reloads(tmp_path):
    """BERT (minilm-l6's architecture): blocks under `encoder.layer`, called with a positional
    mask, no head; its word embeddings are the largest part."""
    model = load_model("tiny-bert")
    parts = quantizable_parts(model.module)
    assert EMBED in parts and "head" not in parts
    specs = [QuantSpec(2, 16), QuantSpec(4, 16)]
    sensitivity = measure_sensitivity(model.module, _batches(), specs)
    assert sensitivity.signal == "cosine"
    low, high = (sensitivity.network[s.label] for s in specs)
    assert low > high > 0
    quantize_model(model, uniform_plan(model.module, QuantSpec(4, 16), "gptq"), _batches())
    ids = torch.randint(5, 250, (1, 24))
    reloaded = load_model(str(save_model(model, tmp_path / "q")))
    with torch.inference_mode():
        assert torch.equal(model.module(input_ids=ids).last_hidden_state,
                           reloaded.module(input_ids=ids).last_hidden_state)


def test_an_untied_head_is_probed_from_the_cached_block_outputs():
    """Untied, the head's probe needs no rerun of the blocks and gives the same KL; tied, the
    embeddings read the quantized head, so the whole model must rerun."""
    from mfmaccel.compress.prober import Prober, first_block_to_rerun

    spec = QuantSpec(3, 16)
    untied = Prober(_untied_qwen2().module, _batches())
    start = first_block_to_rerun("head", untied)
    assert start == untied.cache.blocks
    assert untied.probe(["head"], spec, start) == pytest.approx(
        untied.probe(["head"], spec, None), rel=1e-5)
    assert first_block_to_rerun("head", Prober(load_model("tiny-qwen2").module,
                                                 _batches())) is None


def test_multiply_weights_leave_out_a_looked_up_embedding_packed_or_not():
    """A token is multiplied through every weight but the untied embedding it looks up; a tied
    one is the head too. Quantizing changes how weights are stored, not how many multiply."""
    untied, tied = _untied_qwen2(), load_model("tiny-qwen2")
    embed = untied.module.get_input_embeddings().weight.numel()
    assert untied.multiply_weights == untied.params - embed
    assert tied.multiply_weights == tied.params
    for model in (untied, tied):
        before = model.multiply_weights
        quantize_model(model, uniform_plan(model.module, QuantSpec(4, 16)))
        assert model.multiply_weights == before
