"""A DINOv2 tower (medvlm's since issue 22: a standard pre-norm ViT with LayerScale) as an
integer-only program.

Patch embedding: the 14x14, stride-14 convolution is one int8 GEMM over the unfolded image
patches (no overlap, no padding), landing in int16 at the embedding sum's scale. The CLS token
and the position embeddings for the input's grid (interpolated once, in float, by transformers'
own bicubic resampling from the 37x37 grid DINOv2 was trained on) are one int16 table at that
scale, added to the patch tokens.

Encoder layers: those of the ViT-Hybrid program (`vit.encoder_layer`: integer LayerNorm from
the int16 residual stream, int8 q/k/v, integer softmax, i-GELU, per-token power-of-two scales
on the context and the GELU output, output projections into int16 and `residual_add`).
LayerScale multiplies each branch's output by a per-channel lambda before the residual add;
it is folded exactly into the output projection and fc2 (their rows and biases times lambda)
before quantization, so the int8 weights and per-channel scales absorb it for free. Two
refinements over the ViT-Hybrid's layers, for twelve layers of error to compound through:
both LayerNorm outputs are smoothed (SmoothQuant, alpha 0.5: the factors divided into gamma and
beta, multiplied into the q/k/v and fc1 columns), and fc1 lands in int16 for `WideGelu`
instead of int8 for `IGelu`. On 48 medvqa2 val images the last hidden state's mean cosine to
float goes from 0.9899 (neither) to 0.9940 (int16 GELU) and 0.9967 (both; alpha 0.3 and 0.7
gave 0.9958 and 0.9962).

Weight bits: every linear's weights are int8 (symmetric, per output channel) unless
`weight_bits` gives it fewer, by the name `runtime.parts.quantizable_parts` gives it on the
tower's blocks (`layers.3.attention.q_proj`, `layers.3.mlp.fc2`: what compress's sensitivity
and mixed search name on a `hw.codesign_subject.TowerEncoder`); fewer bits are fewer levels of
the same grid, so the datapath is unchanged. The patch embedding stays int8.

The program stops at the last block's output, the hidden state LLaVA reads; DINOv2's final
LayerNorm is not on that path. Outside the integer datapath: quantizing the normalised pixels
at the input, and dequantizing the hidden states for the float projector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.compress.calibration import RangeRecorder, record_ranges
from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.linear import INT16, checked_weight_bits, product_inputs
from mfmaccel.hw.intexec.vit import EncoderParts, IntConv, IntViTLayer, encode, encoder_layer
from mfmaccel.hw.intops import INT8, IntRange
from mfmaccel.runtime.anatomy import linear_layers

DINOV2_SMOOTHING = 0.5  # SmoothQuant's strength on the LayerNorm outputs (None: none)


def layer_scaled(linear: nn.Linear, lambdas: torch.Tensor) -> nn.Linear:
    """A float64 copy of `linear` whose outputs are multiplied channel by channel by `lambdas`:
    LayerScale(linear(x)) = (lambda W) x + lambda b."""
    lambdas = lambdas.detach().double()
    copy = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None,
                     dtype=torch.float64)
    with torch.no_grad():
        copy.weight.copy_(linear.weight.detach().double() * lambdas[:, None])
        if linear.bias is not None:
            copy.bias.copy_(linear.bias.detach().double() * lambdas)
    return copy


def dinov2_parts(layer: nn.Module) -> EncoderParts:
    """A `Dinov2Layer`'s pieces, LayerScale folded into the output projection and fc2."""
    attention = layer.attention
    return EncoderParts(
        layer.norm1, (attention.q_proj, attention.k_proj, attention.v_proj),
        layer_scaled(attention.o_proj, layer.layer_scale1.lambda1), layer.norm2,
        layer.mlp.fc1, layer_scaled(layer.mlp.fc2, layer.layer_scale2.lambda1))


def linear_names(tower: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per block, each linear of the tower's blocks by the name `weight_bits` keys it with:
    `layers.<block>.<path in the block>`, as `runtime.parts.quantizable_parts` names the
    blocks' linears on `hw.codesign_subject.TowerEncoder`."""
    return [{f"layers.{i}.{path}": linear for path, linear in linear_layers(layer).items()}
            for i, layer in enumerate(tower.encoder.layer)]


def _layer_bits(layer: nn.Module, names: dict[str, nn.Linear],
                bits: dict[str, int]) -> dict[str, int]:
    """The role (`vit.LINEAR_ROLES`) -> bits of one block's linears, found by name (the
    output projection and fc2 reach `encoder_layer` as LayerScale-folded copies)."""
    name_of = {id(linear): name for name, linear in names.items()}
    attention, mlp = layer.attention, layer.mlp
    roles = {"query": attention.q_proj, "key": attention.k_proj, "value": attention.v_proj,
             "attention_out": attention.o_proj, "intermediate": mlp.fc1, "output": mlp.fc2}
    return {role: bits[name_of[id(linear)]] for role, linear in roles.items()}


@dataclass(frozen=True)
class IntDinov2:
    pixel_scale: float
    image_size: tuple[int, int]  # (height, width) the position table was made for
    patches: IntConv  # 14x14 stride 14: one GEMM over the unfolded patches -> int16
    cls_position: torch.Tensor  # (1 + tokens, hidden) int16: CLS and position tables summed
    embed_scale: float
    layers: list[IntViTLayer]
    pixels: IntRange = INT8  # the quantized pixels' range (the patch GEMM reads them)

    def quantize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if tuple(pixel_values.shape[-2:]) != self.image_size:
            height, width = self.image_size
            raise UserInputError(f"the integer DINOv2 program was built for {height}x{width} "
                                 f"images, not {pixel_values.shape[-2]}x{pixel_values.shape[-1]}"
                                 "; calibrate it on images of the size it will run on")
        return self.pixels.clamp(torch.round(pixel_values.double() / self.pixel_scale).long())

    def hidden_states(self, pixel_values: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """(int16 tokens, scale) entering the encoder and after each layer, CLS first."""
        tokens = self.patches(self.quantize_pixels(pixel_values)).flatten(2).transpose(1, 2)
        return encode(tokens, self.cls_position, self.layers, embed_scale=self.embed_scale)


def _taps(tower: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    projection = tower.embeddings.patch_embeddings.projection
    taps = {"pixels": (projection, "input"), "projection": (projection, "output"),
            "embed": (tower.encoder.layer[0], "input")}
    for i, layer in enumerate(tower.encoder.layer):
        attention, mlp = layer.attention, layer.mlp
        taps.update({
            f"{i}.ln1": (layer.norm1, "output"),
            f"{i}.q": (attention.q_proj, "output"),
            f"{i}.k": (attention.k_proj, "output"),
            f"{i}.v": (attention.v_proj, "output"),
            f"{i}.ctx": (attention.o_proj, "input"),
            f"{i}.res1": (layer.layer_scale1, "output"),
            f"{i}.h1": (layer.norm2, "input"),
            f"{i}.ln2": (layer.norm2, "output"),
            f"{i}.ff": (mlp.fc1, "output"),
            f"{i}.gelu": (mlp.fc2, "input"),
            f"{i}.res2": (layer.layer_scale2, "output"),
            f"{i}.out": (layer, "output"),
        })
    return taps


def check_dinov2(tower: nn.Module) -> None:
    """Refuse DINOv2 variants the program has no units for, in one line."""
    config = tower.config
    if config.use_swiglu_ffn:
        raise UserInputError("this DINOv2 has a SwiGLU MLP (the giant size); the integer "
                             "program covers the GELU MLP of DINOv2 S, B and L")
    if config.hidden_act not in ("gelu", "gelu_new", "gelu_python"):
        raise UserInputError(f"activation {config.hidden_act!r} has no integer unit; i-GELU "
                             "covers gelu")


def _cls_position(tower: nn.Module, image_size: tuple[int, int],
                  embed_scale: float) -> torch.Tensor:
    """The CLS token plus the position embeddings for `image_size`, interpolated once by
    transformers itself, as an int16 table at `embed_scale`."""
    embeddings = tower.embeddings
    height, width = image_size
    patch = tower.config.patch_size
    tokens = 1 + (height // patch) * (width // patch)
    shape_only = torch.zeros(1, tokens, tower.config.hidden_size)
    table = embeddings.interpolate_pos_encoding(shape_only, height, width)[0].double().clone()
    table[0] += embeddings.cls_token.detach().double()[0, 0]
    return INT16.clamp(torch.round(table / embed_scale).long())


def _embed_scale(ranges: RangeRecorder) -> float:
    return max(ranges.peak("embed"), ranges.peak("projection")) / INT16.high


@torch.inference_mode()
def convert_dinov2(tower: nn.Module, calibration: Sequence[torch.Tensor], per_token: bool = True,
                   *, alpha: float | None = DINOV2_SMOOTHING, wide_gelu: bool = True,
                   activation_bits: int | None = None,
                   weight_bits: Mapping[str, int] | None = None) -> IntDinov2:
    """Calibrate on batches of real (processed) pixel values, all of one size, and build the
    integer program for images of that size; `alpha`: SmoothQuant's strength on the LayerNorm
    outputs (None: none); `wide_gelu`: int16 GELU inputs (`vit.WideGelu`), else int8;
    `activation_bits`: every tensor a product reads, the pixels included, at that many bits
    (`linear.product_inputs`); `weight_bits`: the blocks' linears given fewer than 8 weight
    bits, by name (`linear_names`: `layers.0.attention.q_proj`, ...), the rest at 8."""
    check_dinov2(tower)
    inputs = product_inputs(activation_bits, per_token)
    names = linear_names(tower)
    bits = checked_weight_bits(weight_bits, (n for block in names for n in block),
                               "layers.0.attention.q_proj")
    tower.eval()
    sizes = set()

    def calibration_pass():
        for pixels in calibration:
            sizes.add(tuple(pixels.shape[-2:]))
            yield tower(pixels)

    ranges = record_ranges(tower, _taps(tower), calibration_pass)
    if len(sizes) != 1:
        raise UserInputError(f"calibration images come in {len(sizes)} sizes; the integer "
                             "DINOv2 program is built for one (its position table's)")
    image_size = sizes.pop()
    pixel_scale, embed_scale = ranges.scale("pixels", inputs.signed.high), _embed_scale(ranges)
    layers, scale = [], embed_scale
    for i, layer in enumerate(tower.encoder.layer):
        layers.append(encoder_layer(dinov2_parts(layer), ranges, i, scale_in=scale,
                                    heads=tower.config.num_attention_heads, per_token=per_token,
                                    alpha=alpha, wide_gelu=wide_gelu, inputs=inputs,
                                    weight_bits=_layer_bits(layer, names[i], bits)))
        scale = layers[-1].scales["out"]
    projection = tower.embeddings.patch_embeddings.projection
    return IntDinov2(
        pixel_scale=pixel_scale, image_size=image_size,
        patches=IntConv.build(projection, None, pixel_scale, embed_scale, out=INT16),
        cls_position=_cls_position(tower, image_size, embed_scale), embed_scale=embed_scale,
        layers=layers, pixels=inputs.signed)


__all__ = ["IntDinov2", "check_dinov2", "convert_dinov2", "dinov2_parts", "layer_scaled",
           "linear_names"]
