"""`mfmaccel export`: GGUF files that keep our packed integers, read back by our loader, by gguf's
own dequantizers and by llama.cpp; plain fp16 Hugging Face folders; bad input refused.

The tiny models' byte tokenizer gets `<|endoftext|>` added (and the embedding one row more):
transformers' GGUF loader builds a GPT-2 tokenizer, which adds that token when the vocabulary
lacks it, and our loader then refuses a tokenizer longer than the embedding. Real byte-level
vocabularies (Qwen2, SmolLM2) carry it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as GGML
from gguf import GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.models import load_model
from mfmaccel.models.gguf_blocks import encode, gguf_type
from mfmaccel.models.gguf_export import ROUNDED, export_gguf, gguf_name
from mfmaccel.models.hf_export import export_hf
from mfmaccel.runtime.grid import QuantizedTensor, QuantSpec, dequantize, grid_params, quantize_with
from mfmaccel.runtime.linear import QuantLinear
from mfmaccel.runtime.plan import FULL, QuantPlan

PROMPT = torch.tensor([[71, 68, 75, 75, 78, 32, 119, 111, 114, 108, 100]])
MIXED = ("int8-c-sym", "int4-g32-sym", "int4-g32-asym", "int3-g32-asym", "int5-g32-sym",
         "int5-g64-asym", FULL)
PLANS = ("int8-c-sym", "int4-g32-sym", "int4-g32-asym", "mixed")


def _spec(label: str) -> QuantSpec:
    bits, group, sym = label.split("-")
    return QuantSpec(int(bits[3:]), None if group == "c" else int(group[1:]), sym == "sym")


def _plan(module: torch.nn.Module, name: str) -> QuantPlan:
    if name != "mixed":
        return uniform_plan(module, _spec(name))
    plan = uniform_plan(module, _spec("int8-c-sym"))
    choice = {part: MIXED[i % len(MIXED)] for i, part in enumerate(plan.choice)}
    specs = {label: {"bits": s.bits, "group_size": s.group_size, "symmetric": s.symmetric}
             for label in set(choice.values()) - {FULL} for s in [_spec(label)]}
    return QuantPlan(choice, specs, "rtn")


def _tiny(family: str, plan: str, *, tied: bool = True):
    model = load_model(f"tiny-{family}")
    if not tied:  # a head of its own, and token embeddings packed apart (QuantEmbedding)
        model.module.config.tie_word_embeddings = False
        head = model.module.get_output_embeddings()
        head.weight = torch.nn.Parameter(head.weight.detach().clone() * 0.5)
    model.tokenizer = copy.deepcopy(model.tokenizer)
    model.tokenizer.add_special_tokens({"additional_special_tokens": ["<|endoftext|>"]},
                                       replace_extra_special_tokens=False)
    model.module.resize_token_embeddings(len(model.tokenizer))
    return quantize_model(model, _plan(model.module, plan))


@pytest.fixture(scope="module", params=[(f, p) for f in ("llama", "qwen2") for p in PLANS],
                ids=lambda fp: f"{fp[0]}-{fp[1]}")
def exported(request, tmp_path_factory):
    family, plan = request.param
    model = _tiny(family, plan)
    path = tmp_path_factory.mktemp("gguf") / f"{family}-{plan}.gguf"
    return model, export_gguf(model, path), path


def _packed(module: torch.nn.Module) -> dict[str, QuantLinear]:
    """GGUF name -> packed layer (a tied embedding is the head)."""
    layers = {gguf_name(f"{n}.weight"): m for n, m in module.named_modules()
              if isinstance(m, QuantLinear)}
    if "output.weight" in layers and module.config.tie_word_embeddings:
        layers["token_embd.weight"] = layers.pop("output.weight")
    return layers


def _permuted(weight: torch.Tensor, name: str, config) -> torch.Tensor:
    """Our weight in llama.cpp's row order (Llama q and k rows interleaved per head)."""
    if config.model_type != "llama" or not (".attn_q." in name or ".attn_k." in name):
        return weight
    heads = config.num_attention_heads if ".attn_q." in name else config.num_key_value_heads
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


@pytest.mark.parametrize("label", ["int8-c-sym", "int8-g64-sym", "int4-c-sym", "int4-g32-sym",
                                   "int4-g128-sym", "int5-c-sym", "int5-g32-sym", "int4-c-asym",
                                   "int4-g64-asym", "int5-g32-asym", "int3-g32-sym",
                                   "int8-c-asym", "int4-g48-sym"])
def test_blocks_dequantize_to_our_grid(label) -> None:
    spec = _spec(label)
    weight = torch.randn(6, 192, generator=torch.Generator().manual_seed(0))
    scale, zero = grid_params(weight, spec)
    qt = QuantizedTensor(quantize_with(weight, scale, zero, spec), scale, zero, spec)
    encoded, ours = encode(qt), dequantize(qt)
    if gguf_type(spec, 192) is None:
        assert encoded is None
        return
    theirs = torch.from_numpy(gguf_dequantize(encoded.data, encoded.kind))
    assert encoded.exact == spec.symmetric
    if encoded.exact:
        assert torch.equal(theirs, ours)
    else:
        torch.testing.assert_close(theirs, ours, rtol=0, atol=float(ours.abs().max()) * 2**-10)


def test_each_tensor_has_the_type_its_plan_maps_to(exported) -> None:
    model, report, path = exported
    written = {t.name: t.tensor_type for t in GGUFReader(path).tensors}
    assert written == {name: GGML[kind] for name, kind in report.tensors.items()}
    for name, layer in _packed(model.module).items():
        expected = gguf_type(layer.spec, layer.in_features) or GGML.F16
        assert written[name] == expected, name
        assert (name in report.not_kept) == (expected == GGML.F16)
    for name, kind in written.items():
        if name.endswith(("norm.weight", ".bias")):
            assert kind == GGML.F32, name


def test_file_size_is_tensors_plus_metadata(exported) -> None:
    _, report, path = exported
    reader = GGUFReader(path)
    align = 32
    data = sum(-(-t.n_bytes // align) * align for t in reader.tensors)
    assert path.stat().st_size == reader.data_offset + data == report.bytes
    assert reader.data_offset < 64 * 1024  # metadata: a tiny vocabulary, nothing else


def test_gguf_dequantizes_to_our_weights(exported) -> None:
    model, _, path = exported
    tensors = {t.name: t for t in GGUFReader(path).tensors}
    for name, layer in _packed(model.module).items():
        tensor = tensors[name]
        theirs = torch.from_numpy(
            gguf_dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32))
        ours = _permuted(layer.dequantized_weight(), name, model.module.config)
        if tensor.tensor_type in ROUNDED:  # only the fp16 offset m differs
            torch.testing.assert_close(theirs, ours, rtol=0,
                                       atol=float(ours.abs().max()) * 2**-10)
        elif tensor.tensor_type == GGML.F16:
            assert torch.equal(theirs, ours.half().float()), name
        else:
            assert torch.equal(theirs, ours), name


def test_our_loader_reads_back_the_same_model(exported, monkeypatch, tmp_path) -> None:
    model, report, path = exported
    monkeypatch.setenv("MFMACCEL_CACHE", str(tmp_path / "cache"))
    back = load_model(str(path))
    with torch.inference_mode():
        ours, theirs = model.module(PROMPT).logits, back.module(PROMPT).logits
    atol = 2e-3 if report.rounded or report.not_kept else 1e-5
    torch.testing.assert_close(theirs, ours, rtol=0, atol=atol)
    assert back.tokenizer("hello world").input_ids == model.tokenizer("hello world").input_ids


@pytest.mark.llama_cpp
def test_llama_cpp_predicts_our_next_token(exported) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    model, _, path = exported
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False)
    ids = PROMPT[0].tolist()
    llm.eval(ids)
    theirs = torch.tensor(np.array(llm.scores[len(ids) - 1]), dtype=torch.float32)
    with torch.inference_mode():
        ours = model.module(PROMPT).logits[0, -1]
    top2 = ours.topk(2).values
    assert top2[0] - top2[1] > 1e-3, "a near tie: pick another prompt"
    assert int(theirs.argmax()) == int(ours.argmax())
    # llama.cpp multiplies packed weights by int8-quantized activations: close, not equal
    assert torch.corrcoef(torch.stack([theirs, ours]))[0, 1] > 0.99


def test_untied_embeddings_and_head_are_written_apart(tmp_path, monkeypatch) -> None:
    model = _tiny("llama", "int4-g32-asym", tied=False)
    report = export_gguf(model, tmp_path / "untied.gguf")
    assert report.tensors["token_embd.weight"] == report.tensors["output.weight"] == "Q4_1"
    monkeypatch.setenv("MFMACCEL_CACHE", str(tmp_path / "cache"))
    back = load_model(str(tmp_path / "untied.gguf"))
    with torch.inference_mode():
        ours, theirs = model.module(PROMPT).logits, back.module(PROMPT).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-3)


@pytest.mark.llama_cpp
def test_qwen2_split_rule_is_named_for_llama_cpp(tmp_path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from tokenizers import Regex, pre_tokenizers

    from mfmaccel.models.gguf_vocab import _QWEN2_SPLIT

    model = _tiny("qwen2", "int8-c-sym")
    model.tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    report = export_gguf(model, tmp_path / "q.gguf")
    field = GGUFReader(tmp_path / "q.gguf").fields["tokenizer.ggml.pre"]
    assert report.tokenizer == "gpt2/qwen2" == f"gpt2/{bytes(field.parts[-1]).decode()}"
    text = "def f(x):\n    return x + 12"
    llm = llama_cpp.Llama(str(tmp_path / "q.gguf"), n_ctx=64, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == \
        model.tokenizer(text).input_ids


def _sentencepiece_tokenizer():
    """A Llama-2-style tokenizer: BPE over "▁"-prefixed text with byte fallback."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    merges = [("h", "e"), ("l", "l"), ("▁", "he"), ("ll", "o"), ("▁he", "llo"),
              ("▁", "w"), ("o", "r"), ("▁w", "or"), ("l", "d"), ("▁wor", "ld")]
    for token in ["▁", *"helowrd", *("".join(m) for m in merges)]:
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True,
                                unk_token="<unk>", fuse_unk=True))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                            normalizers.Replace(" ", "▁")])
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                      decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>")


@pytest.mark.llama_cpp
def test_sentencepiece_tokenizer_tokenizes_alike_everywhere(tmp_path, monkeypatch) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    model = load_model("tiny-llama")
    model.tokenizer = _sentencepiece_tokenizer()
    model.module.resize_token_embeddings(len(model.tokenizer), mean_resizing=False)
    export_gguf(model, tmp_path / "sp.gguf")
    text = "hello world hex!"  # merges, a token split by its merges, a byte-fallback "!"
    ours = model.tokenizer(text).input_ids
    llm = llama_cpp.Llama(str(tmp_path / "sp.gguf"), n_ctx=64, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ours
    monkeypatch.setenv("MFMACCEL_CACHE", str(tmp_path / "cache"))
    assert load_model(str(tmp_path / "sp.gguf")).tokenizer(text).input_ids == ours


def test_hf_folder_is_plain_fp16_and_computes_the_same(tmp_path) -> None:
    import transformers

    model = _tiny("qwen2", "int4-g32-asym")
    export_hf(model, tmp_path / "hf")
    assert not (tmp_path / "hf" / "quantization.json").exists()
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert {p.dtype for p in plain.parameters()} == {torch.float16}
    with torch.inference_mode():
        ours, theirs = model.module(PROMPT).logits, plain.float()(PROMPT).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-3)


runner = CliRunner()


def _export(*args: str):
    return runner.invoke(app, ["export", *args])


def test_cli_writes_and_replaces_its_own_gguf(tmp_path) -> None:
    out = tmp_path / "m.gguf"
    for _ in range(2):
        result = _export("--model", "tiny-qwen2", "--format", "gguf", "--out", str(out))
        assert result.exit_code == 0, result.output
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


@pytest.mark.parametrize(
    ("model", "fmt", "out", "message"),
    [
        ("gpt-17", "gguf", "m.gguf", "unknown model 'gpt-17'"),
        ("tiny-bert", "gguf", "m.gguf", "supports the llama and qwen2 families, not 'bert'"),
        ("tiny-llama", "gguf", "theirs.gguf", "is not a GGUF file mfmaccel export wrote"),
        ("tiny-llama", "gguf", "missing/m.gguf", "does not exist; create it"),
        ("tiny-llama", "hf", "theirs", "holds files mfmaccel did not write"),
        ("tiny-llama", "hf", "missing/hf", "does not exist; create it"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(tmp_path, model, fmt, out, message) -> None:
    (tmp_path / "theirs.gguf").write_bytes(b"not a gguf file")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _export("--model", model, "--format", fmt, "--out", str(tmp_path / out))
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "theirs.gguf").read_bytes() == b"not a gguf file"
