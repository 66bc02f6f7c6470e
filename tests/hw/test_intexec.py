"""Integer-only execution of a BERT encoder and a Llama-family decoder: close to float, integer
all the way, clear errors for what has no integer unit."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.llama import convert_llama
from mfmaccel.hw.intexec.quality import (
    corpus_sentences,
    decoder_agreement,
    encoder_agreement,
    mean_pooled,
)
from mfmaccel.models import load_model


@pytest.fixture(scope="module")
def tiny_bert():
    return load_model("tiny-bert")


def _batch(model, split: str, count: int):
    texts = corpus_sentences(split, count)
    return dict(model.tokenizer(texts, padding=True, truncation=True, max_length=48,
                                return_tensors="pt"))


@torch.inference_mode()
def test_integer_bert_tracks_float_on_real_text(tiny_bert) -> None:
    program = convert_bert(tiny_bert.module, [_batch(tiny_bert, "train", 16)])
    batch = _batch(tiny_bert, "test", 8)
    mask = batch["attention_mask"]
    hidden = program(batch["input_ids"], mask)
    assert hidden.dtype == torch.long and int(hidden.abs().max()) <= 1 << 15
    reference = mean_pooled(tiny_bert.module(**batch).last_hidden_state.double(), mask)
    integer = mean_pooled(hidden.double() * program.scale_out, mask)
    assert float((reference * integer).sum(-1).min()) > 0.95


def test_integer_execution_names_what_it_cannot_run(tiny_bert) -> None:
    with pytest.raises(UserInputError, match="not a BERT-family encoder"):
        convert_bert(load_model("tiny-llama").module, [])
    module = load_model("tiny-bert").module
    module.config.hidden_act = "relu"
    with pytest.raises(UserInputError, match="'relu' has no integer unit"):
        convert_bert(module, [])


def test_cli_intexec_refuses_what_it_cannot_run_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    for model, reason in (("tiny-gpt2", "not a Llama-family decoder"),
                          ("tiny-vit", "not an encoder")):
        result = CliRunner().invoke(app, ["hw", "intexec", "--model", model,
                                          "--out", str(tmp_path / "x.json")])
        assert result.exit_code == 2 and reason in result.output, result.output
        assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_integer_llama_tracks_float_on_real_text(arch) -> None:
    """W8A8 integer-only decoder (GQA, rotary, SiLU, int24 residual) on a tiny random model:
    integers all the way, logits close to float, the same next-token predictions nearly
    everywhere."""
    model = load_model(f"tiny-{arch}")
    result = decoder_agreement(model, tokens=96, calibration=96, context=48)
    assert result.next_token_agreement > 0.9
    assert abs(result.ppl_change) < 0.05


def test_integer_llama_refuses_longer_inputs_than_it_was_built_for() -> None:
    model = load_model("tiny-llama")
    program = convert_llama(model.module, [torch.arange(16)[None]], max_length=16)
    assert program(torch.arange(16)[None]).dtype == torch.long
    with pytest.raises(UserInputError, match="exceed the 16"):
        program(torch.arange(17)[None])


def test_integer_llama_with_static_activation_scales_tracks_float_too() -> None:
    result = decoder_agreement(load_model("tiny-llama"), tokens=96, calibration=96, context=48,
                               per_token=False)
    assert not result.per_token and result.next_token_agreement > 0.9


def test_settings_are_chosen_on_a_validation_slice_not_the_test_half() -> None:
    model = load_model("tiny-llama")
    result = decoder_agreement(model, tokens=48, calibration=96, context=48, split="validation",
                               alpha=0.5)
    assert result.split == "validation" and result.alpha == 0.5
    assert result.next_token_agreement > 0.9
    with pytest.raises(UserInputError, match="unknown split"):
        decoder_agreement(model, tokens=48, calibration=96, context=48, split="val")
    with pytest.raises(UserInputError, match="reach the validation"):
        decoder_agreement(model, tokens=48, calibration=10**6, context=48, split="validation")


def test_per_token_rows_keep_their_bias() -> None:
    """A row entering with a per-token shift s is 2^s coarser; its bias must shrink with it, so
    the per-token layer agrees with the static one on the same real values."""
    from torch import nn

    from mfmaccel.hw.intexec.linear import IntLinear
    from mfmaccel.hw.intops import INT8, IntRange, token_shifts

    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    with torch.no_grad():
        linear.bias.mul_(20)
    x = torch.randn(6, 16) * torch.tensor([1, 1, 4, 16, 64, 0.01])[:, None]
    scale_in = float(x.abs().max()) / 127 / 256  # 2^8 finer than per-tensor int8
    layer = IntLinear.build(linear, scale_in, 0.05, out=IntRange(16))
    x8, shift = token_shifts(torch.round(x.double() / scale_in).long(), INT8)
    got = layer(x8, shift).double() * 0.05
    want = linear(x).double().detach()
    assert shift.flatten().tolist() == [3, 2, 5, 6, 8, 0]
    # int8 per token: about 1% of the row's largest output, plus one output step
    assert ((got - want).abs().amax(1) <= 0.01 * want.abs().amax(1) + 0.05).all()


def _recorder() -> tuple[list[tuple[int, int]], object]:
    seen: list[tuple[int, int]] = []
    return seen, lambda done, total: seen.append((done, total))


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_progress_counts_calibration_and_scoring_and_changes_no_figure(kind) -> None:
    """`mfmaccel hw intexec` runs for minutes on a real model; its steps report as they go,
    and the record is the same to the bit with or without anyone watching."""
    if kind == "decoder":
        model, sizes = load_model("tiny-llama"), {"tokens": 96, "calibration": 96, "context": 48}
        measure = decoder_agreement
    else:  # 20 paragraphs each: two sentence batches of at most 16
        model, sizes = load_model("tiny-bert"), {"sentences": 20, "calibration": 20}
        measure = encoder_agreement
    plain = measure(model, **sizes).to_dict()
    (calibrated, on_calibration), (scored, on_scoring) = _recorder(), _recorder()
    watched = measure(model, **sizes, calibration_progress=on_calibration, progress=on_scoring)
    assert watched.to_dict() == plain
    assert calibrated == [(1, 2), (2, 2)] and scored == [(1, 2), (2, 2)]


def test_cli_intexec_says_how_far_it_is_without_a_terminal(tmp_path) -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    result = CliRunner().invoke(app, ["hw", "intexec", "--model", "tiny-llama", "--tokens", "96",
                                      "--calibration-tokens", "96", "--context", "48",
                                      "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 0, result.output
    assert "calibration: 2/2 (100%)" in result.output and "scoring: 2/2 (100%)" in result.output
