"""medvlm's vision tower (a ViT-Hybrid: ResNet stem + pre-norm ViT encoder) as an integer-only
program.

Stem: every convolution has its BatchNorm folded in (weights and a bias), runs as an int8 GEMM
over the unfolded image (im2col) with an int32 bias, and is requantized per output channel;
ReLU is a clamp at zero and max-pooling a max, both exact on integers. In a basic block the
main path's last convolution and the shortcut land in int16 at their own scales and are added
by `residual_add` into the block's int8 output. The 1x1 projection lands in int16 at the
embedding sum's scale, where the CLS token and the position embeddings are int16 tables.

Encoder layer (pre-norm): LayerNorm(int16 residual) -> int8 q, k, v -> integer softmax
attention (the BERT program's unit) -> output projection to int16 -> residual add; LayerNorm
-> int8 -> i-GELU -> output projection to int16 -> residual add. The attention context and
the GELU output reach their GEMMs with per-token power-of-two scales, as in the BERT program.

Outside the integer datapath: quantizing the normalised pixels once at the input and
dequantizing the selected hidden states for the (float) projector and language model.

The encoder layer (`encoder_layer`, from a layer's `EncoderParts`) is shared with medvlm's
DINOv2 program (`dinov2.py`), which also smooths its LayerNorm outputs (SmoothQuant) and feeds
i-GELU int16 inputs (`WideGelu`); this tower's program keeps neither, so its records stand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mfmaccel.compress.calibration import RangeRecorder, record_ranges
from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import IntAttention
from mfmaccel.hw.intexec.linear import (
    DEFAULT_INPUTS,
    INT16,
    WEIGHT_BITS,
    IntLinear,
    ProductInputs,
    gemm_input_scale,
    requantize_into,
    smoothing,
)
from mfmaccel.hw.intops import (
    INT8,
    INT32,
    Dyadic,
    IGelu,
    ILayerNorm,
    IntRange,
    check_range,
    dyadic,
    residual_add,
    rounding_shift,
)


def encode(tokens: torch.Tensor, cls_position: torch.Tensor, layers: Sequence[nn.Module], *,
           embed_scale: float) -> list[tuple[torch.Tensor, float]]:
    """(int16 tokens, scale) entering the encoder and after each layer: the class token and
    position table (int16, at `embed_scale`) joined to the patch tokens, then every layer."""
    cls = cls_position[:1].expand(len(tokens), 1, -1)
    h = INT16.clamp(torch.cat([cls, tokens + cls_position[None, 1:]], dim=1))
    states = [(h, embed_scale)]
    for layer in layers:
        h = layer(h)
        states.append((h, layer.scales["out"]))
    return states


def folded_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> nn.Linear:
    """The convolution with its (eval-mode) BatchNorm folded in, as a linear layer over the
    unfolded (Cin * kh * kw) input patches."""
    weight = conv.weight.detach().double().flatten(1)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(len(weight))
    if norm is not None:
        factor = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        weight = weight * factor[:, None]
        bias = (bias - norm.running_mean.double()) * factor + norm.bias.detach().double()
    linear = nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear


@dataclass(frozen=True)
class IntConv:
    """A convolution as an int8 GEMM over im2col patches (zero padding is exact: symmetric
    scales put real zero at integer zero)."""

    linear: IntLinear
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    relu: bool

    @classmethod
    def build(cls, conv: nn.Conv2d, norm: nn.BatchNorm2d | None, scale_in: float,
              scale_out: float, *, out: IntRange = INT8, relu: bool = False) -> IntConv:
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise UserInputError(f"{conv}: only plain zero-padded convolutions have an integer "
                                 "unit (no groups, no dilation)")
        linear = IntLinear.build(folded_conv(conv, norm), scale_in, scale_out, out=out)
        return cls(linear, conv.kernel_size, conv.stride, conv.padding, relu)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        patches = functional.unfold(x.double(), self.kernel, padding=self.padding,
                                    stride=self.stride).long()  # exact: small integers
        out_h = (height + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        y = self.linear(patches.transpose(1, 2))  # (B, L, Cout)
        if self.relu:
            y = y.clamp(min=0)
        return y.transpose(1, 2).reshape(batch, -1, out_h, out_w)


def max_pool(x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """Max-pooling of integers (computed on float64 copies: exact for these magnitudes)."""
    return functional.max_pool2d(x.double(), pool.kernel_size, pool.stride, pool.padding,
                                 pool.dilation, pool.ceil_mode).long()


@dataclass(frozen=True)
class IntBasicBlock:
    """ResNet basic block: relu(conv2(relu(conv1(x))) + shortcut(x))."""

    conv1: IntConv
    conv2: IntConv  # -> int16 at `scales["main"]`
    shortcut: IntConv | None  # -> int16 at `scales["short"]`; None: the identity
    scales: dict[str, float]  # main, short (or the input's), out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scales
        main = self.conv2(self.conv1(x))
        short = self.shortcut(x) if self.shortcut is not None else x
        return residual_add(main, s["main"], short, s["short"], s["out"]).clamp(min=0)


@dataclass(frozen=True)
class WideGelu:
    """i-GELU of an int16 input: x/2 (1 + erf(x / sqrt 2)) with I-BERT's erf read from x
    `shift` bits coarser, multiplied by the fine x. The GEMM before it then needs no int8
    rounding of the GELU input, the largest error of a DINOv2 MLP besides the erf's own. The
    shift is the smallest that keeps the product within int32 (the erf reads 9-11 bits of
    DINOv2's GELU inputs)."""

    erf: IGelu  # its constants at the coarse scale
    shift: int
    scale_out: float

    @classmethod
    def build(cls, scale: float) -> WideGelu:
        def fits(erf: IGelu) -> bool:  # |erf + q_c| <= 2 |q_c|, times the largest int16
            return 2 * abs(erf.q_c) * INT16.high <= INT32.high

        # from the coarsest erf input down (each finer step quadruples q_c, so a step past the
        # limit stays far inside IGelu's own and it never refuses)
        shift = INT16.bits - 2
        while shift > 0 and fits(IGelu.build(scale * 2 ** (shift - 1))):
            shift -= 1
        erf = IGelu.build(scale * 2**shift)
        if not fits(erf):
            raise UserInputError(f"GELU input scale {scale} is too fine for the int16 i-GELU")
        return cls(erf, shift, erf.scale_out / 2**shift)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        q = q.long()
        coarse = rounding_shift(q, self.shift)
        clipped = torch.minimum(coarse.abs(), torch.tensor(-self.erf.q_b))
        erf = torch.sign(coarse) * ((clipped + self.erf.q_b) ** 2 + self.erf.q_c)
        return check_range(-q * (erf + self.erf.q_c), INT32, "i-GELU output")


@dataclass(frozen=True)
class IntViTLayer:
    norm1: ILayerNorm
    attention: IntAttention
    attention_out: IntLinear  # -> int16 at scales["res1"]
    norm2: ILayerNorm
    intermediate: IntLinear
    gelu: IGelu | WideGelu
    gelu_out: Dyadic  # GELU output -> the output projection's input scale
    output: IntLinear  # -> int16 at scales["res2"]
    scales: dict[str, float]  # in, res1, h1, res2, out (int16 residual-stream scales)
    per_token: bool
    inputs: ProductInputs = DEFAULT_INPUTS

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        s, signed = self.scales, self.inputs.signed
        mask = torch.ones(h.shape[:2], dtype=torch.long)
        attended = requantize_into(self.attention_out, self.attention(self.norm1(h), mask),
                                   self.attention.context, self.per_token, signed)
        h1 = residual_add(attended, s["res1"], h, s["in"], s["h1"], out=INT16)
        out = requantize_into(self.output, self.gelu(self.intermediate(self.norm2(h1))),
                              self.gelu_out, self.per_token, signed)
        return residual_add(out, s["res2"], h1, s["h1"], s["out"], out=INT16)


@dataclass(frozen=True)
class IntViT:
    pixel_scale: float
    stem: IntConv
    pool: nn.MaxPool2d
    blocks: list[IntBasicBlock]
    projection: IntConv  # -> int16 at embed_scale
    cls_position: torch.Tensor  # (1 + tokens, hidden) int16: CLS and position tables summed
    embed_scale: float
    layers: list[IntViTLayer]

    def quantize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return INT8.clamp(torch.round(pixel_values.double() / self.pixel_scale).long())

    def hidden_states(self, pixel_values: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """(int16 tokens, scale) entering the encoder and after each layer, CLS first."""
        x = max_pool(self.stem(self.quantize_pixels(pixel_values)), self.pool)
        for block in self.blocks:
            x = block(x)
        tokens = self.projection(x).flatten(2).transpose(1, 2)
        return encode(tokens, self.cls_position, self.layers, embed_scale=self.embed_scale)


class IntegerTower(nn.Module):
    """Drop-in for a LLaVA `vision_tower`: runs the integer program (a ViT-Hybrid's `IntViT`
    or a DINOv2's `IntDinov2`: anything with `hidden_states(pixel_values)`) and hands the
    projector dequantized hidden states, so VQA accuracy can be measured with an integer tower.
    LLaVA reads `hidden_states[-1]`, the last block's output; `last_hidden_state` is that same
    tensor (a tower's final LayerNorm, off LLaVA's path, is not part of the program)."""

    def __init__(self, program, patch_size: int) -> None:
        super().__init__()
        self.program, self.patch_size = program, patch_size

    def forward(self, pixel_values: torch.Tensor, **_kwargs) -> BaseModelOutputWithPooling:
        states = tuple((h.double() * scale).float()
                       for h, scale in self.program.hidden_states(pixel_values))
        return BaseModelOutputWithPooling(last_hidden_state=states[-1], hidden_states=states)


def _taps(tower: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    embeddings = tower.embeddings
    stem = embeddings.backbone.embedder.embedder
    taps = {"pixels": (stem.convolution, "input"), "stem": (stem.normalization, "output"),
            "projection": (embeddings.projection, "output"),
            "embed": (tower.encoder.layer[0].layernorm_before, "input")}
    for b, block in enumerate(_basic_blocks(tower)):
        taps[f"b{b}.conv1"] = (block.layer[0].normalization, "output")
        taps[f"b{b}.main"] = (block.layer[1].normalization, "output")
        taps[f"b{b}.out"] = (block, "output")
        if not isinstance(block.shortcut, nn.Identity):
            taps[f"b{b}.short"] = (block.shortcut, "output")
    for i, layer in enumerate(tower.encoder.layer):
        attention = layer.attention
        taps.update({
            f"{i}.ln1": (layer.layernorm_before, "output"),
            f"{i}.q": (attention.attention.query, "output"),
            f"{i}.k": (attention.attention.key, "output"),
            f"{i}.v": (attention.attention.value, "output"),
            f"{i}.ctx": (attention.attention, "output"),
            f"{i}.res1": (attention.output.dense, "output"),
            f"{i}.h1": (layer.layernorm_after, "input"),
            f"{i}.ln2": (layer.layernorm_after, "output"),
            f"{i}.ff": (layer.intermediate.dense, "output"),
            f"{i}.gelu": (layer.intermediate, "output"),
            f"{i}.res2": (layer.output.dense, "output"),
            f"{i}.out": (layer, "output"),
        })
    return taps


def _basic_blocks(tower: nn.Module) -> list[nn.Module]:
    stages = tower.embeddings.backbone.encoder.stages
    return [block for stage in stages for block in stage.layers]


def _check_tower(tower: nn.Module) -> None:
    embeddings = getattr(tower, "embeddings", None)
    if type(embeddings).__name__ != "DPTViTHybridEmbeddings":
        raise UserInputError(f"{type(tower).__name__}: integer execution covers medvlm's "
                             "towers, a DINOv2 (Dinov2Model) or a ViT-Hybrid (DPT hybrid "
                             "embeddings); this tower is neither")
    blocks = _basic_blocks(tower)
    if any(type(b).__name__ != "ResNetBasicLayer" for b in blocks):
        raise UserInputError("the tower's ResNet stem has bottleneck blocks; the integer "
                             "program covers basic blocks (layer_type='basic')")
    act = tower.config.hidden_act
    if act not in ("gelu", "gelu_new", "gelu_python"):
        raise UserInputError(f"activation {act!r} has no integer unit; i-GELU covers gelu")


def _block(block: nn.Module, ranges: RangeRecorder, b: int, scale_in: float) -> IntBasicBlock:
    s8 = ranges.scale
    main_scale, out_scale = s8(f"b{b}.main", INT16.high), s8(f"b{b}.out")
    first, second = block.layer
    shortcut, short_scale = None, scale_in
    if not isinstance(block.shortcut, nn.Identity):
        short_scale = s8(f"b{b}.short", INT16.high)
        shortcut = IntConv.build(block.shortcut.convolution, block.shortcut.normalization,
                                 scale_in, short_scale, out=INT16)
    return IntBasicBlock(
        IntConv.build(first.convolution, first.normalization, scale_in, s8(f"b{b}.conv1"),
                      relu=True),
        IntConv.build(second.convolution, second.normalization, s8(f"b{b}.conv1"), main_scale,
                      out=INT16),
        shortcut, {"main": main_scale, "short": short_scale, "out": out_scale})


@dataclass(frozen=True)
class EncoderParts:
    """A pre-norm encoder layer's float pieces, wherever its tower keeps them (any per-channel
    scaling of a branch, such as DINOv2's LayerScale, already folded into its output layer)."""

    norm1: nn.LayerNorm
    projections: tuple[nn.Linear, nn.Linear, nn.Linear]  # q, k, v
    attention_out: nn.Linear  # -> the first residual branch
    norm2: nn.LayerNorm
    intermediate: nn.Linear  # -> GELU
    output: nn.Linear  # -> the second residual branch


# an encoder layer's linears, as `encoder_layer`'s `weight_bits` names them
LINEAR_ROLES = ("query", "key", "value", "attention_out", "intermediate", "output")


@dataclass(frozen=True)
class SmoothedNorm:
    """A LayerNorm into int8 for the GEMMs after it, optionally with SmoothQuant's factors
    divided into its gamma and beta (and multiplied into those GEMMs' weight columns)."""

    unit: ILayerNorm
    scale_out: float
    factors: torch.Tensor | None  # None: no smoothing


def smoothed_norm(ln: nn.LayerNorm, consumers: Sequence[nn.Linear], channel_absmax: torch.Tensor,
                  scale_in: float, alpha: float | None, out: IntRange = INT8) -> SmoothedNorm:
    """`ln` from the int16 residual stream at `scale_in` to `out` (int8 or fewer bits);
    `channel_absmax`: its calibrated output range per channel; `alpha` None: no smoothing."""
    gamma, beta = ln.weight.detach().double(), ln.bias.detach().double()
    factors = None
    if alpha is not None:
        factors = smoothing(channel_absmax, [c.weight for c in consumers], alpha)
        gamma, beta, channel_absmax = gamma / factors, beta / factors, channel_absmax / factors
    scale_out = max(float(channel_absmax.max()), 1e-8) / out.high
    return SmoothedNorm(ILayerNorm.build(gamma, beta, scale_in, scale_out, eps=ln.eps, out=out),
                        scale_out, factors)


def encoder_layer(parts: EncoderParts, ranges: RangeRecorder, i: int, *, scale_in: float,
                  heads: int, per_token: bool, alpha: float | None = None,
                  wide_gelu: bool = False, inputs: ProductInputs = DEFAULT_INPUTS,
                  weight_bits: Mapping[str, int] | None = None) -> IntViTLayer:
    """Layer `i`'s integer program from its parts and the ranges recorded at its taps
    (`i.ln1`, `i.q`, `i.k`, `i.v`, `i.ctx`, `i.res1`, `i.h1`, `i.ln2`, `i.ff`, `i.gelu`,
    `i.res2`, `i.out`); `scale_in`: the int16 residual stream's scale entering it; `alpha`:
    SmoothQuant's strength on both LayerNorm outputs (None: none); `wide_gelu`: the MLP's
    first GEMM lands in int16 and `WideGelu` reads it (else int8 and `IGelu`); `inputs`: the
    precision of the tensors a product reads; `weight_bits`: bits of the linears it names
    (`LINEAR_ROLES`; 8 for the others)."""
    bits = {role: WEIGHT_BITS for role in LINEAR_ROLES} | dict(weight_bits or {})
    if set(bits) != set(LINEAR_ROLES):
        raise UserInputError(f"weight bits for {sorted(set(bits) - set(LINEAR_ROLES))}: an "
                             f"encoder layer's linears are {', '.join(LINEAR_ROLES)}")

    def s8(name: str) -> float:  # a tensor a product reads
        return ranges.scale(f"{i}.{name}", inputs.signed.high)

    def s16(name: str) -> float:
        return ranges.scale(f"{i}.{name}", INT16.high)

    s_ctx, s_gelu = (gemm_input_scale(s8(name), per_token) for name in ("ctx", "gelu"))
    ff_range = INT16 if wide_gelu else INT8
    s_ff = ranges.scale(f"{i}.ff", ff_range.high)
    gelu = WideGelu.build(s_ff) if wide_gelu else IGelu.build(s_ff)
    norm1 = smoothed_norm(parts.norm1, parts.projections, ranges.channels[f"{i}.ln1"],
                          scale_in, alpha, inputs.signed)
    norm2 = smoothed_norm(parts.norm2, [parts.intermediate], ranges.channels[f"{i}.ln2"],
                          s16("h1"), alpha, inputs.signed)
    return IntViTLayer(
        norm1=norm1.unit,
        attention=IntAttention.build(parts.projections, norm1.scale_out,
                                     (s8("q"), s8("k"), s8("v")), s_ctx, heads=heads,
                                     smoothing=norm1.factors, inputs=inputs,
                                     weight_bits=[bits[r] for r in ("query", "key", "value")]),
        attention_out=IntLinear.build(parts.attention_out, s_ctx, s16("res1"), out=INT16,
                                      weight_bits=bits["attention_out"]),
        norm2=norm2.unit,
        intermediate=IntLinear.build(parts.intermediate, norm2.scale_out, s_ff, out=ff_range,
                                     smoothing=norm2.factors, weight_bits=bits["intermediate"]),
        gelu=gelu, gelu_out=dyadic(gelu.scale_out / s_gelu),
        output=IntLinear.build(parts.output, s_gelu, s16("res2"), out=INT16,
                               weight_bits=bits["output"]),
        scales={"in": scale_in, "res1": s16("res1"), "h1": s16("h1"), "res2": s16("res2"),
                "out": s16("out")},
        per_token=per_token, inputs=inputs,
    )


def _hybrid_parts(layer: nn.Module) -> EncoderParts:
    attention = layer.attention.attention
    return EncoderParts(layer.layernorm_before,
                        (attention.query, attention.key, attention.value),
                        layer.attention.output.dense, layer.layernorm_after,
                        layer.intermediate.dense, layer.output.dense)


@torch.inference_mode()
def convert_vit(tower: nn.Module, calibration: Sequence[torch.Tensor],
                per_token: bool = True) -> IntViT:
    """Calibrate on batches of real (processed) pixel values and build the integer program."""
    _check_tower(tower)
    tower.eval()
    ranges = record_ranges(tower, _taps(tower), lambda: (tower(p) for p in calibration))
    embeddings = tower.embeddings
    embedder = embeddings.backbone.embedder
    pixel_scale, stem_scale = ranges.scale("pixels"), ranges.scale("stem")
    blocks, scale = [], stem_scale
    for b, block in enumerate(_basic_blocks(tower)):
        blocks.append(_block(block, ranges, b, scale))
        scale = blocks[-1].scales["out"]
    embed_scale = max(ranges.peak("embed"), ranges.peak("projection")) / INT16.high
    grid = int(round(math.sqrt(embeddings.position_embeddings.shape[1] - 1)))
    positions = embeddings._resize_pos_embed(embeddings.position_embeddings, grid, grid)[0]
    table = positions.detach().double().clone()
    table[0] += embeddings.cls_token.detach().double()[0, 0]
    cls_position = INT16.clamp(torch.round(table / embed_scale).long())
    projection = IntConv.build(embeddings.projection, None, scale, embed_scale, out=INT16)
    config = tower.config
    layers, scale = [], embed_scale
    for i, layer in enumerate(tower.encoder.layer):
        layers.append(encoder_layer(_hybrid_parts(layer), ranges, i, scale_in=scale,
                                    heads=config.num_attention_heads, per_token=per_token))
        scale = layers[-1].scales["out"]
    return IntViT(
        pixel_scale=pixel_scale,
        stem=IntConv.build(embedder.embedder.convolution, embedder.embedder.normalization,
                           pixel_scale, stem_scale, relu=True),
        pool=embedder.pooler, blocks=blocks, projection=projection,
        cls_position=cls_position, embed_scale=embed_scale, layers=layers)


__all__ = ["LINEAR_ROLES", "EncoderParts", "IntViT", "IntViTLayer", "IntegerTower", "WideGelu",
           "convert_vit", "encoder_layer"]
