"""Checkpoints load only when whole: every damaged, mismatched or incomplete folder is refused
with one line (exit 2 through the CLI), never loaded with random weights or left to a trace.

Each folder is a real tiny random model saved with `save_pretrained` plus its tokenizer, then
edited: a header rewritten, a config value changed, a file removed.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.models.header import read_safetensors_header
from mfmaccel.models.hf import _load_converted
from mfmaccel.models.preprocessing import check_tokenizer_fits
from mfmaccel.models.tiny import TINY_BUILDERS, byte_tokenizer

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def save_tiny(arch: str, folder: Path, **save_kwargs) -> Path:
    model = load_model(f"tiny-{arch}")
    model.module.save_pretrained(folder, **save_kwargs)
    (model.processor or model.tokenizer).save_pretrained(folder)
    return folder


def read_header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def write_header(path: Path, header: object, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def edit_header(path: Path, change: Callable[[dict], object]) -> None:
    """Rewrite `path`'s header with `change` (which edits it in place or returns a new one)."""
    header, data = read_header(path)
    result = change(header)
    write_header(path, header if result is None else result, data)


def edit_config(folder: Path, **values) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    (folder / "config.json").write_text(json.dumps(config))


def refused(folder: Path, match: str) -> str:
    with pytest.raises(UserInputError, match=match) as caught:
        load_model(str(folder))
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def llama_folder(tmp_path) -> Path:
    return save_tiny("llama", tmp_path / "llama")


# --- tensors that do not match the config ------------------------------------------------------

def test_whole_folder_loads_with_identical_weights(llama_folder) -> None:
    again = load_model(str(llama_folder))
    original = load_model("tiny-llama").module.state_dict()
    assert all(torch.equal(t, original[k]) for k, t in again.module.state_dict().items())


def test_renamed_tensor_in_valid_header_is_refused(llama_folder) -> None:
    renamed = Q_PROJ.replace("q_proj", "q_prox")
    edit_header(llama_folder / "model.safetensors",
                lambda h: h.__setitem__(renamed, h.pop(Q_PROJ)))
    message = refused(llama_folder, "do not match config.json")
    assert f"1 missing ({Q_PROJ})" in message
    assert f"1 unexpected ({renamed})" in message


def test_fewer_layers_in_config_than_weights_is_refused(llama_folder) -> None:
    edit_config(llama_folder, num_hidden_layers=1)
    message = refused(llama_folder, r"unexpected \(model\.layers\.1\.")
    assert "and 6 more" in message  # 9 tensors per layer: first three named, the rest counted


def test_more_layers_in_config_than_weights_is_refused(llama_folder) -> None:
    edit_config(llama_folder, num_hidden_layers=3)
    refused(llama_folder, r"9 missing \(model\.layers\.2\.")


def test_hidden_size_disagreeing_with_weights_is_one_line(llama_folder) -> None:
    edit_config(llama_folder, hidden_size=32)
    refused(llama_folder, r"mis-shaped \(.*64 in the file, .*32 for the config")


def test_config_transformers_cannot_build_is_one_line(llama_folder) -> None:
    edit_config(llama_folder, hidden_size=30)  # not divisible by 4 heads
    with pytest.raises(UserInputError):
        load_model(str(llama_folder))


def test_untied_model_without_its_head_is_refused(tmp_path) -> None:
    """Tied embeddings need no head in the file; untied ones do."""
    from mfmaccel.models.tiny import _llama_config

    config = _llama_config()
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    module = tf.LlamaForCausalLM(config)
    folder = tmp_path / "untied"
    module.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    load_model(str(folder))  # whole: loads
    state = {k: v for k, v in module.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    refused(folder, r"1 missing \(lm_head\.weight\)")


@pytest.mark.parametrize("arch", ["gpt2", "bert", "vit", "llava"])
def test_legacy_key_names_and_prefixes_still_load(tmp_path, arch) -> None:
    """save_pretrained writes ViT's `encoder.layer` and LLaVA's `language_model.model` names,
    which transformers renames on loading; the check renames them the same way."""
    folder = save_tiny(arch, tmp_path / arch)
    assert load_model(str(folder)).kind == TINY_BUILDERS[arch][0]


def test_base_model_checkpoint_loads_into_its_head_class(tmp_path) -> None:
    """A checkpoint saved with BERT's `bert.` prefix (as BertForX saves it) loads as BertModel."""
    folder = save_tiny("bert", tmp_path / "bert")
    edit_header(folder / "model.safetensors", lambda h: {
        (k if k == "__metadata__" else f"bert.{k}"): v for k, v in h.items()})
    assert load_model(str(folder)).kind == "encoder"


def test_old_gpt2_layout_with_constant_buffers_loads(tmp_path) -> None:
    """GPT-2 as first published: no `transformer.` prefix, plus the causal-mask constants
    (`attn.bias`, `attn.masked_bias`) older versions saved; transformers drops those."""
    folder = save_tiny("gpt2", tmp_path / "gpt2")
    state = load_file(str(folder / "model.safetensors"))
    old = {k.removeprefix("transformer."): v for k, v in state.items()}
    old["h.0.attn.bias"] = torch.ones(1, 1, 8, 8)
    old["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(old, str(folder / "model.safetensors"), metadata={"format": "pt"})
    again = load_model(str(folder))
    assert torch.equal(again.module.transformer.wte.weight, state["transformer.wte.weight"])


def test_sharded_checkpoint_loads_and_a_missing_shard_is_refused(tmp_path) -> None:
    folder = save_tiny("llama", tmp_path / "sharded", max_shard_size="100KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    load_model(str(folder))
    shards[-1].unlink()
    refused(folder, "missing shard")


def test_a_stray_safetensors_file_beside_the_model_is_not_read_as_weights(llama_folder) -> None:
    save_file({"lora_A": torch.zeros(2, 2)}, str(llama_folder / "adapter_model.safetensors"))
    load_model(str(llama_folder))


def test_quantized_folder_with_a_renamed_tensor_is_refused(tmp_path) -> None:
    """Packed folders (compress.quant.storage) are checked against their plan, also one line."""
    from mfmaccel.compress.quantize import quantize_model, uniform_plan
    from mfmaccel.models.loader import save_model
    from mfmaccel.runtime.grid import QuantSpec

    model = load_model("tiny-llama")
    quantize_model(model, uniform_plan(model.module, QuantSpec(4, 16), "rtn"))
    folder = save_model(model, tmp_path / "q")
    load_model(str(folder))  # whole: loads
    header, _ = read_header(folder / "model.safetensors")
    name = next(k for k in header if k.startswith("model.layers.0.self_attn.q_proj."))
    edit_header(folder / "model.safetensors",
                lambda h: h.__setitem__(name.replace("q_proj", "q_prox"), h.pop(name)))
    refused(folder, "q_prox|lacks")


# --- safetensors headers --------------------------------------------------------------------

def _first_tensor(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def _by_offset(header: dict) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"),
                  key=lambda k: header[k]["data_offsets"][0])


def _overlap(header: dict) -> None:
    first, second = _by_offset(header)[:2]
    header[second] = dict(header[first])  # the same bytes, claimed twice


def _drop(field: str) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        header[_first_tensor(header)].pop(field)
    return change


HEADER_FAULTS = {
    "no data_offsets": (_drop("data_offsets"), "has no 'data_offsets'"),
    "no dtype": (_drop("dtype"), "has no 'dtype'"),
    "header is a list": (lambda h: [h], "not an object of tensors"),
    "entry is a list": (lambda h: h.__setitem__(_first_tensor(h), [1, 2]), "not an object"),
    "bad dtype": (lambda h: h[_first_tensor(h)].__setitem__("dtype", "F17"), "unknown dtype"),
    "dtype not a string": (lambda h: h[_first_tensor(h)].__setitem__("dtype", 4),
                           "unknown dtype"),
    "negative shape": (lambda h: h[_first_tensor(h)].__setitem__("shape", [-1, 64]),
                       "not a list of non-negative integers"),
    "shape is a string": (lambda h: h[_first_tensor(h)].__setitem__("shape", "64x64"),
                          "not a list of non-negative integers"),
    "float in shape": (lambda h: h[_first_tensor(h)].__setitem__("shape", [1.5]),
                       "not a list of non-negative integers"),
    "offsets one number": (lambda h: h[_first_tensor(h)].__setitem__("data_offsets", [0]),
                           "not \\[begin, end\\]"),
    "offsets reversed": (lambda h: h[_first_tensor(h)].__setitem__(
        "data_offsets", h[_first_tensor(h)]["data_offsets"][::-1]), "0 <= begin <= end|needs"),
    "offsets out of range": (lambda h: h[_by_offset(h)[-1]].__setitem__(
        "data_offsets", [o + 10**9 for o in h[_by_offset(h)[-1]]["data_offsets"]]),
        "belong to no tensor"),
    "offsets overlap": (_overlap, "overlap"),
    "size not dtype x shape": (lambda h: h[_first_tensor(h)].__setitem__("dtype", "F16"),
                               "needs"),
    "metadata not strings": (lambda h: h.__setitem__("__metadata__", {"format": 1}),
                             "__metadata__"),
}


@pytest.mark.parametrize("fault", sorted(HEADER_FAULTS))
def test_header_fault_is_one_line(llama_folder, fault) -> None:
    change, match = HEADER_FAULTS[fault]
    path = llama_folder / "model.safetensors"
    edit_header(path, change)
    with pytest.raises(UserInputError, match=match) as caught:
        read_safetensors_header(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    refused(llama_folder, match)


def test_last_tensor_past_the_end_is_truncation(llama_folder) -> None:
    path = llama_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    refused(llama_folder, "truncated")


def test_bytes_after_the_last_tensor_are_refused(llama_folder) -> None:
    path = llama_folder / "model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    refused(llama_folder, "16 bytes after its last tensor")


def test_config_that_is_a_list_is_one_line(llama_folder) -> None:
    (llama_folder / "config.json").write_text("[1, 2]")
    refused(llama_folder, "not a JSON object")


# --- tokenizer and image processor ----------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_folder_without_tokenizer_files_is_refused(tmp_path, arch) -> None:
    folder = save_tiny(arch, tmp_path / arch)
    (folder / "tokenizer.json").unlink()  # tokenizer_config.json stays: no vocabulary though
    refused(folder, "has no tokenizer files")


@pytest.mark.parametrize(("arch", "removed"), [("llava", "processor_config.json"),
                                                ("vit", "preprocessor_config.json")])
def test_folder_without_image_processor_is_refused(tmp_path, arch, removed) -> None:
    folder = save_tiny(arch, tmp_path / arch)
    (folder / removed).unlink()
    refused(folder, "has no image processor")


def test_tokenizer_with_more_ids_than_the_model_is_refused(tmp_path) -> None:
    """A random GPT-2 of 200 tokens saved with a 261-token tokenizer (the issue's `quantize`
    and `prune` IndexError)."""
    torch.manual_seed(0)
    module = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=200))
    folder = tmp_path / "gpt2-200"
    module.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    refused(folder, "tokenizer has 261 tokens but the model's embedding has 200 rows")


@pytest.mark.parametrize("arch", sorted(a for a, (kind, _) in TINY_BUILDERS.items()
                                        if kind != "vision"))
def test_every_tiny_builtin_tokenizer_fits_its_model(arch) -> None:
    model = load_model(f"tiny-{arch}")
    check_tokenizer_fits(model.tokenizer,
                         model.module.get_input_embeddings().num_embeddings, model.name)


def test_converted_gguf_cache_fault_names_the_cache(llama_folder) -> None:
    (llama_folder / "tokenizer.json").unlink()
    with pytest.raises(UserInputError, match=f"delete {llama_folder} to convert it again"):
        _load_converted(llama_folder, name="x", source="x.gguf", dtype=torch.float32)


# --- through the CLI: one line, exit 2 ------------------------------------------------------

def _break_rename(folder: Path) -> None:
    edit_header(folder / "model.safetensors",
                lambda h: h.__setitem__(Q_PROJ.replace("q_proj", "q_prox"), h.pop(Q_PROJ)))


CLI_FAULTS = {
    "renamed tensor": (_break_rename, "do not match config.json"),
    "layer count": (lambda f: edit_config(f, num_hidden_layers=1), "unexpected"),
    "hidden size": (lambda f: edit_config(f, hidden_size=32), "mis-shaped"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer files"),
    "no data_offsets": (lambda f: edit_header(f / "model.safetensors",
                                              HEADER_FAULTS["no data_offsets"][0]),
                        "has no 'data_offsets'"),
}


@pytest.mark.parametrize("fault", sorted(CLI_FAULTS))
def test_eval_refuses_with_one_line_and_exit_2(llama_folder, tmp_path, fault) -> None:
    damage, message = CLI_FAULTS[fault]
    damage(llama_folder)
    out = tmp_path / "ppl.json"
    result = CliRunner().invoke(app, ["eval", "--model", str(llama_folder), "--task", "ppl",
                                      "--max-tokens", "64", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        result.output.strip()]
    assert not out.exists()


def test_quantize_refuses_a_tokenizer_beyond_the_vocabulary(tmp_path) -> None:
    torch.manual_seed(0)
    module = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=200))
    module.save_pretrained(tmp_path / "gpt2")
    byte_tokenizer().save_pretrained(tmp_path / "gpt2")
    result = CliRunner().invoke(app, ["quantize", "--model", str(tmp_path / "gpt2"),
                                      "--uniform", "int8-c-sym", "--method", "rtn",
                                      "--out", str(tmp_path / "q")])
    assert result.exit_code == 2, result.output
    assert "261 tokens" in result.output and "IndexError" not in result.output
    assert not (tmp_path / "q").exists()


def test_mfmaccel_process_exits_2_on_a_renamed_tensor(llama_folder, tmp_path) -> None:
    _break_rename(llama_folder)
    mfmaccel = Path(sys.executable).with_name("mfmaccel")
    done = subprocess.run([str(mfmaccel), "eval", "--model", str(llama_folder), "--task", "ppl",
                           "--out", str(tmp_path / "o.json")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert "1 missing" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
