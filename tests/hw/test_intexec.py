"""Integer-only execution of a BERT encoder: close to float, integer all the way, clear
errors for what has no integer unit."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.quality import corpus_sentences, mean_pooled
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


def test_cli_intexec_refuses_a_decoder_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    result = CliRunner().invoke(app, ["hw", "intexec", "--model", "tiny-llama",
                                      "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "not an encoder" in result.output
    assert not (tmp_path / "x.json").exists()
