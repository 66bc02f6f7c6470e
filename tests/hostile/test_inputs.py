"""Hostile inputs and shapes: configs without weights, architectures outside the zoo, a model
whose window is shorter than the calibration window, decompression bombs and broken images in
a VQA folder, and `--limit` that must limit what is decoded. Each works, or ends in one line
and exit code 2."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import transformers as tf
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.data.medvqa import build as medvqa_build
from mfmaccel.data.medvqa import folder as medvqa_folder
from mfmaccel.data.medvqa import load_medvqa, load_vqa_folder, majority_baseline, planned_answers
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.ppl import perplexity
from mfmaccel.evaluate.run import load_task_data
from mfmaccel.hw.ops import Gemm
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model
from mfmaccel.models.tiny import byte_tokenizer

runner = CliRunner()
SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128}


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line_exit_2(result, *needles: str) -> None:
    """A refusal: exit 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------ hw: configs without weights


def _llama():
    return tf.LlamaConfig(vocab_size=128, num_key_value_heads=2, max_position_embeddings=256,
                          **SMALL)


def _gpt2():
    return tf.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=256)


def _bert():
    return tf.BertConfig(vocab_size=128, **SMALL)


def _deit():
    return tf.DeiTConfig(image_size=64, patch_size=16, **SMALL)


def _vit():
    return tf.ViTConfig(image_size=64, patch_size=16, **SMALL)


def _llava():
    return load_model("tiny-llava").module.config


CONFIGS = {"llama": _llama, "gpt2": _gpt2, "bert": _bert, "deit": _deit, "vit": _vit,
           "llava": _llava}


def config_only(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    CONFIGS[name]().save_pretrained(folder)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    return folder


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_only_folders_trace_on_the_meta_device(tmp_path: Path, name: str) -> None:
    """Shapes, not weights: every GEMM of the architecture, attention included."""
    workload = workload_for_spec(str(config_only(tmp_path, name)), 8)
    gemms = [op for op in workload.ops if isinstance(op, Gemm)]
    assert any(op.role == "attention-score" for op in gemms)
    assert sum(op.macs for op in gemms if op.weight_bits) > 0
    vision = name in ("deit", "vit", "llava")
    assert ("pixel_values" in workload.description) == vision
    if name in ("deit", "vit"):  # 16 patches of 16 pixels + CLS (+ distillation token)
        score = next(op for op in gemms if op.role == "attention-score")
        assert score.m == (18 if name == "deit" else 17)
    if name == "llava":  # 16 image tokens, then the 8 text tokens
        assert "input_ids (1, 24)" in workload.description


def _signature(workload) -> dict:
    return {(type(op).__name__, *(v for k, v in vars(op).items() if k not in ("count", "where"))):
            op.count for op in workload.merged().ops}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_a_config_traces_as_its_model_with_weights(tmp_path: Path, arch: str) -> None:
    """The meta trace of a config-only folder is the real forward pass of the same model, head
    included: same operations, same shapes, same MACs."""
    loaded = load_model(f"tiny-{arch}")
    loaded.module.config.save_pretrained(tmp_path)
    from_config = workload_for_spec(str(tmp_path), 40)
    assert _signature(from_config) == _signature(workload_for_model(loaded, 40))


def test_an_architecture_the_loader_refuses_is_traced_from_its_config(tmp_path: Path) -> None:
    """DeiT with weights: the loader does not load it, its config has every shape."""
    tf.DeiTModel(_deit()).save_pretrained(tmp_path / "weights")
    with_weights = workload_for_spec(str(tmp_path / "weights"), 1)
    assert _signature(with_weights) == _signature(workload_for_spec(str(config_only(
        tmp_path, "deit")), 1))


def test_hw_simulate_and_dse_take_config_only_folders(tmp_path: Path) -> None:
    out = tmp_path / "deit.json"
    result = run("hw", "simulate", "--model", str(config_only(tmp_path, "deit")),
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["macs"] > 0
    result = run("hw", "dse", "--model", str(config_only(tmp_path, "llama")), "--seq-len", "16",
                 "--rows", "4,8", "--cols", "8", "--workers", "1",
                 "--out", str(tmp_path / "dse"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dse" / "front.json").is_file()


def _t5(folder: Path) -> str:
    tf.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                num_heads=4).save_pretrained(folder)
    return "'t5'"


def _unknown_family(folder: Path) -> str:
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no-such-family", "hidden_size": 8}')
    return "config.json: not a transformers config"


def _not_json(folder: Path) -> str:
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": ')
    return "config.json: not a transformers config"


@pytest.mark.parametrize("make", [_t5, _unknown_family, _not_json])
def test_what_cannot_be_traced_is_one_line_naming_it(tmp_path: Path, make) -> None:
    folder = tmp_path / "model"
    needle = make(folder)
    with pytest.raises(UserInputError, match=needle):
        workload_for_spec(str(folder), 8)
    one_line_exit_2(run("hw", "simulate", "--model", str(folder), "--out",
                        str(tmp_path / "o.json")), needle)
    assert not (tmp_path / "o.json").exists()


def test_config_only_shapes_are_checked(tmp_path: Path) -> None:
    llama, llava = config_only(tmp_path, "llama"), config_only(tmp_path, "llava")
    with pytest.raises(UserInputError, match="256 positions"):
        workload_for_spec(str(llama), 512)
    with pytest.raises(UserInputError, match="takes no images"):
        workload_for_spec(str(llama), 8, 224)
    with pytest.raises(UserInputError, match="32-pixel images"):
        workload_for_spec(str(llava), 8, 64)
    with pytest.raises(UserInputError, match="not a multiple of its 16-pixel patches"):
        workload_for_spec(str(config_only(tmp_path, "deit")), 1, 100)


# ------------------------------------------------- a window shorter than the calibration's


@pytest.fixture(scope="module")
def gpt2_256(tmp_path_factory) -> Path:
    """A GPT-2 with 256 learned positions: position 256 does not exist."""
    folder = tmp_path_factory.mktemp("gpt2-256")
    tokenizer = byte_tokenizer()
    config = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256,
                           vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    tf.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_calibration_windows_are_clipped_to_the_model(gpt2_256: Path) -> None:
    model = load_model(str(gpt2_256))
    batches = calibration_batches(model.tokenizer, 1024, positions=model.context_length)
    assert [b.shape[1] for b in batches] == [256] * 4
    assert [b.shape[1] for b in calibration_batches(model.tokenizer, 1024)] == [512] * 2
    assert perplexity(model, "a b c " * 400).context == 256
    with pytest.raises(UserInputError, match="at most 256"):
        perplexity(model, "a b c " * 400, context=512)


@pytest.mark.parametrize("command", [
    ["quantize", "--uniform", "int4-g128", "--method", "gptq"],
    ["prune", "--blocks", "1"],
])
def test_quantize_and_prune_a_256_position_model(gpt2_256: Path, tmp_path: Path,
                                                 command: list[str]) -> None:
    out = tmp_path / "out"
    result = run(*command, "--model", str(gpt2_256), "--calib-tokens", "1024", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert load_model(str(out)).context_length == 256


# --------------------------------------------------- images in a user's VQA folder


def _png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: tens of kilobytes on disk, width x height pixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def vqa_folder(root: Path, images: dict[str, bytes]) -> Path:
    """One yes/no question per image."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (root / name).write_bytes(data)
    records = [{"image_name": name, "question": f"Is {name} normal?", "answer": "yes"}
               for name in images]
    (root / "test.json").write_text(json.dumps(records))
    return root


def _good_png() -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.frombytes("L", (32, 32), bytes(range(256)) * 4).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("side", [20000, 9000])
def test_a_decompression_bomb_is_refused_without_decoding(tmp_path: Path, monkeypatch,
                                                          side: int) -> None:
    """20000 x 20000 is past PIL's own error; 9000 x 9000 is under its warning. Both are
    refused by their header: decoding them would raise the AssertionError below."""
    bomb = _png(side, side)
    assert len(bomb) < 200_000
    root = vqa_folder(tmp_path / "vqa", {"bomb.png": bomb})

    def decoded(self):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", decoded)
    with pytest.raises(UserInputError, match="bomb.png: image .*pixel limit") as caught:
        load_vqa_folder(root)
    assert "\n" not in str(caught.value)


def _truncated() -> bytes:
    whole = _good_png()
    return whole[: len(whole) // 2]


def _garbled() -> bytes:
    good = bytearray(_png(64, 64))
    good[45:60] = b"\xff" * 15  # inside the compressed pixels
    return bytes(good)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n"],
                         ids=["empty", "text", "signature-only"])
def test_a_non_image_is_one_line(tmp_path: Path, data: bytes) -> None:
    root = vqa_folder(tmp_path / "vqa", {"x.png": data})
    with pytest.raises(UserInputError, match=r"x.png: cannot read image"):
        load_vqa_folder(root)


@pytest.mark.parametrize("make", [_truncated, _garbled])
def test_a_corrupt_image_is_one_line(tmp_path: Path, make) -> None:
    root = vqa_folder(tmp_path / "vqa", {"x.png": make()})
    with pytest.raises(UserInputError, match=r"x.png: cannot read image") as caught:
        load_vqa_folder(root)
    assert "\n" not in str(caught.value)


def test_bad_images_through_the_cli_are_one_line_exit_2(tmp_path: Path) -> None:
    bomb = vqa_folder(tmp_path / "bomb", {"scan.png": _png(20000, 20000)})
    one_line_exit_2(run("eval", "--model", "tiny-llava", "--task", "medvqa", "--data",
                        str(bomb), "--out", str(tmp_path / "o.json")), "scan.png", "pixel limit")
    broken = vqa_folder(tmp_path / "broken", {"scan.png": _truncated()})
    one_line_exit_2(run("eval", "--model", "tiny-llava", "--task", "medvqa", "--data",
                        str(broken), "--out", str(tmp_path / "o.json")), "scan.png",
                    "cannot read image")
    assert not (tmp_path / "o.json").exists()


# ------------------------------------------------------ --limit limits what is decoded


def count_calls(monkeypatch, module, name: str) -> list:
    """Wrap `module.name` (a loader function, not a model) to record its calls."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_limit_decodes_only_the_chosen_images(tmp_path: Path, monkeypatch) -> None:
    root = vqa_folder(tmp_path / "vqa", {f"{i}.png": _good_png() for i in range(6)})
    opened = count_calls(monkeypatch, medvqa_folder, "decode_image")
    data = load_task_data("medvqa", root, limit=2, seed=0)
    assert [s.source_id for s in data.items] == ["0.png", "1.png"]
    assert [Path(args[0]).name for args in opened] == ["0.png", "1.png"]
    opened.clear()
    assert len(load_vqa_folder(root)) == 6 and len(opened) == 6


def test_limit_makes_only_the_chosen_benchmark_images(monkeypatch) -> None:
    """The built-in split: the first N of its seeded order, the same samples as before; its
    majority baseline comes from the planned answers, with no train image made."""
    made = count_calls(monkeypatch, medvqa_build, "generate_sample")
    data = load_task_data("medvqa", None, limit=3, seed=0)
    assert len(data.items) == 3 and len(made) == 3
    assert "overall" in data.baseline
    first = load_medvqa("val", per_source=4, limit=5)
    every = load_medvqa("val", per_source=4)
    assert [(s.source_id, s.question, s.answer, s.image.tobytes()) for s in first] == [
        (s.source_id, s.question, s.answer, s.image.tobytes()) for s in every[:5]]
    assert majority_baseline(planned_answers("val", per_source=4), every) == majority_baseline(
        every, every)


def test_a_bad_limit_is_one_line_exit_2(tmp_path: Path) -> None:
    one_line_exit_2(run("eval", "--model", "tiny-llava", "--task", "medvqa", "--limit", "0",
                        "--out", str(tmp_path / "o.json")), "--limit")


def test_eval_and_a_run_measure_a_256_position_model(gpt2_256: Path, tmp_path: Path) -> None:
    """No --context / ppl_context: perplexity takes the model's shorter window, not 512."""
    import yaml

    result = run("eval", "--model", str(gpt2_256), "--task", "ppl", "--max-tokens", "600",
                 "--out", str(tmp_path / "ppl.json"))
    assert result.exit_code == 0, result.output
    recipe = tmp_path / "short.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "short", "model": str(gpt2_256),
        "evaluation": {"tasks": ["ppl"], "ppl_tokens": 600, "speed": False},
        "stages": [{"stage": "evaluate"}]}))
    result = run("run", str(recipe), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
