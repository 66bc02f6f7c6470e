"""A model as the accelerator sees it: the list of GEMMs and element-wise operations of one
forward pass at a given sequence length (and image, for vision models).

The list is read off a real forward pass, not written per architecture: every aten operation
is recorded under a `TorchDispatchMode` together with the module that issued it. That keeps
pruned layers (their true shapes), quantized layers (their bits) and any Hugging Face
architecture right without a table per family. A model known only by its config runs on the
`meta` device (`hw.metatrace`): shapes propagate, nothing is computed, no weights are needed.

Not counted: embedding lookups, masks, views and copies (data movement the controller does
while loading tiles); batch norms (folded into the convolution before them when the model is
converted to integers) and ReLUs (a clamp at zero in the requantization).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mfmaccel.errors import UserInputError
from mfmaccel.hw.ops import DEFAULT_BITS, Gemm, Op, VectorOp, Workload
from mfmaccel.models.record import CAUSAL_LM, VISION, VLM, LoadedModel
from mfmaccel.runtime.kernels import KERNELS

aten = torch.ops.aten
LINEAR_CLASSES = ("Linear", "Conv1D", "QuantLinear", "FewRowsLinear",
                  "NonDynamicallyQuantizableLinear")
NORM_UNITS = {"LayerNorm": "layernorm", "RMSNorm": "rmsnorm"}
ACTIVATION_UNITS = {"GELU": "gelu", "Gelu": "gelu", "SiLU": "silu", "Silu": "silu"}


def _kind_of(module: nn.Module) -> str | None:
    """'linear', 'norm:<unit>', 'act:<unit>' or None, by class name (HF, torch and ours)."""
    name = type(module).__name__
    if name in LINEAR_CLASSES:
        return "linear"
    for key, unit in NORM_UNITS.items():
        if name.endswith(key):
            return f"norm:{unit}"
    for key, unit in ACTIVATION_UNITS.items():
        if key in name and not list(module.children()):
            return f"act:{unit}"
    return None


def _weight_bits(module: nn.Module) -> int:
    spec = getattr(module, "spec", None)
    return getattr(spec, "bits", DEFAULT_BITS)


def _role(path: str) -> str:
    """What a weight GEMM does, from its module path."""
    lowered = path.lower()
    if any(key in lowered for key in ("lm_head", "classifier", "score", "pooler")):
        return "head"
    if any(key in lowered for key in ("attn", "attention")):
        return "projection"
    return "ffn"


class _Recorder(TorchDispatchMode):
    """Records GEMMs and vector operations, each labelled by the innermost module running."""

    def __init__(self, stack: list[tuple[str, nn.Module, str | None]]) -> None:
        super().__init__()
        self.stack = stack
        self.ops: list[Op] = []
        self.attention_gemms: Counter[int] = Counter()  # per module call: score, context, ...

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._record(func, args, out)
        return out

    def _context(self) -> tuple[str, nn.Module | None, str | None]:
        for path, module, kind in reversed(self.stack):
            if kind is not None:
                return path, module, kind
        return (self.stack[-1][0], self.stack[-1][1], None) if self.stack else ("", None, None)

    def _record(self, func, args, out) -> None:
        path, module, kind = self._context()
        if kind is not None and kind.startswith(("norm:", "act:")):
            return  # the module itself is recorded as one operation when it finishes
        packet = func.overloadpacket
        if packet in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
            a, b = (args[1], args[2]) if packet in (aten.addmm, aten.baddbmm) else args[:2]
            self._gemm(path, module, kind, a, b)
        elif packet is aten.convolution:
            self._conv(path, args[0], args[1], out, args[8])
        elif packet in (aten._scaled_dot_product_flash_attention_for_cpu,
                        aten._scaled_dot_product_efficient_attention,
                        aten._scaled_dot_product_flash_attention):
            self._sdpa(path, *args[:3])
        elif packet in (aten._softmax, aten.softmax):
            length = args[0].shape[args[1]]
            self.ops.append(VectorOp("softmax", args[0].numel() // length, length, where=path))
        elif packet in (aten.gelu, aten.silu):
            self._vector(packet.__name__, args[0], path)
        elif _elementwise(packet, kind, args):
            self._vector("add", args[0], path)

    def _vector(self, unit: str, x: torch.Tensor, path: str) -> None:
        length = x.shape[-1] if x.dim() else 1
        self.ops.append(VectorOp(unit, x.numel() // max(length, 1), length, where=path))

    def _gemm(self, path: str, module, kind, a: torch.Tensor, b: torch.Tensor) -> None:
        batch = a.shape[0] if a.dim() == 3 else 1
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        if kind == "linear":
            if _holds_weight(a, module):  # the host ran W @ x^T (few rows, a slab per thread)
                m, n, batch = n, m * batch, 1  # the accelerator's x @ W^T: weights are B
            self.ops.append(Gemm(_role(path), m, n, k, batch, _weight_bits(module), where=path))
            return
        call = id(module)
        role = ("attention-score", "attention-context")[self.attention_gemms[call] % 2]
        self.attention_gemms[call] += 1
        self.ops.append(Gemm(role, m, n, k, batch, None, where=path))

    def _conv(self, path: str, x, w, out, groups: int) -> None:
        """A convolution as its im2col GEMM: one row per output pixel."""
        pixels = out.numel() // (out.shape[0] * out.shape[1]) * out.shape[0]
        k = w.shape[1] * math.prod(w.shape[2:])
        self.ops.append(Gemm("conv", pixels, w.shape[0] // groups, k, groups, DEFAULT_BITS,
                             where=path))

    def _sdpa(self, path: str, q, k, v) -> None:
        """Fused attention as the products and softmax it stands for."""
        heads = q.numel() // (q.shape[-2] * q.shape[-1])
        length, keys, dim = q.shape[-2], k.shape[-2], q.shape[-1]
        self.ops += [Gemm("attention-score", length, keys, dim, heads, None, where=path),
                     VectorOp("softmax", heads * length, keys, where=path),
                     Gemm("attention-context", length, v.shape[-1], keys, heads, None,
                          where=path)]


def _holds_weight(operand: torch.Tensor, module: nn.Module) -> bool:
    """Whether `operand` is the layer's weight or a view of it: the CPU runtime multiplies
    few rows as W @ x^T (`runtime.fewrows`), in slabs as many as it has threads, and the trace
    must not depend on the host's orientation or thread count."""
    weight = getattr(module, "weight", None)
    return weight is not None and (operand is weight or operand._base is weight)


def _elementwise(packet, kind: str | None, args) -> bool:
    """A residual add, a gate product, a rotary term, or a max pool (comparisons, priced as
    adds); not a bias broadcast or a mask."""
    if packet is aten.max_pool2d_with_indices:
        return True
    return packet in (aten.add, aten.add_, aten.mul) and kind is None and _same_shape(args)


def _same_shape(args) -> bool:
    """Two tensors of one shape: a residual add, a gate product, a rotary term; not a bias
    broadcast or a mask."""
    return (len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2])
            and args[0].shape == args[1].shape and args[0].dim() >= 2)


def trace_module(module: nn.Module, inputs: dict[str, torch.Tensor], model: str,
                 description: str, forward: Callable[[], object] | None = None) -> Workload:
    """Run one forward pass of `module` on `inputs` (or `forward()`, a pass through it built
    by hand) and record what the accelerator would do."""
    stack: list[tuple[str, nn.Module, str | None]] = []
    hooks = []
    recorder = _Recorder(stack)
    for path, sub in module.named_modules():
        kind = _kind_of(sub)
        hooks.append(sub.register_forward_pre_hook(
            lambda mod, _args, p=path, k=kind: stack.append((p, mod, k))))
        hooks.append(sub.register_forward_hook(
            lambda mod, args, out, k=kind: _leave(stack, recorder, k, args)))
    try:
        with torch.no_grad(), recorder:  # kernels off: packed layers multiply as the grid says
            KERNELS.reference(forward or (lambda: module(**inputs)))
    finally:
        for hook in hooks:
            hook.remove()
    return Workload(model, description, recorder.ops)


def _leave(stack, recorder: _Recorder, kind: str | None, args) -> None:
    path, _, _ = stack.pop()
    if kind is None or not kind.startswith(("norm:", "act:")) or not args:
        return
    if any(k is not None and k.startswith(("norm:", "act:")) for _, _, k in stack):
        return  # nested inside another recorded unit
    recorder._vector(kind.split(":")[1], args[0], path)


def workload_for_model(loaded: LoadedModel, seq_len: int,
                       image_size: int | None = None) -> Workload:
    """A loaded model (possibly pruned or quantized) traced on a real forward pass: `seq_len`
    text tokens, plus one image for vision and VLM models (a vision encoder at `image_size`
    pixels, position embeddings interpolated; a VLM at its processor's resolution)."""
    if loaded.kind != VISION:
        check_length(seq_len, loaded.context_length, loaded.name)
    inputs = model_inputs(loaded, seq_len, image_size)
    return trace_module(loaded.module, inputs, loaded.name, describe(inputs))


def checked_side(side: int, patch: int, model: str) -> int:
    if side < patch or side % patch:
        raise UserInputError(f"{model}: image size {side} is not a multiple of its {patch}-pixel "
                             f"patches; use e.g. {max(patch, side // patch * patch)}")
    return side


def no_images(image_size: int | None, model: str) -> None:
    if image_size is not None:
        raise UserInputError(f"{model} takes no images; leave the image size unset")


def check_length(seq_len: int, limit: int | None, model: str) -> None:
    if seq_len < 1:
        raise UserInputError(f"sequence length must be at least 1, got {seq_len}")
    if limit is not None and seq_len > limit:
        raise UserInputError(f"{model} has {limit} positions; use a sequence length of at most "
                             f"{limit}, not {seq_len}")


def model_inputs(loaded: LoadedModel, seq_len: int,
                 image_size: int | None = None) -> dict[str, torch.Tensor | int | bool]:
    """A prefill: `seq_len` tokens (after the image), logits for the last position only."""
    if loaded.kind == VISION:
        config = loaded.module.config
        side = checked_side(image_size or config.image_size, config.patch_size, loaded.name)
        return {"pixel_values": torch.zeros(1, config.num_channels, side, side),
                "interpolate_pos_encoding": side != config.image_size}
    if loaded.kind == VLM:
        from PIL import Image

        from mfmaccel.evaluate.vqa import vqa_prompt

        side = _image_side(loaded.processor)
        if image_size not in (None, side):
            raise UserInputError(f"{loaded.name} takes {side}-pixel images (its image tokens "
                                 f"are fixed); leave the image size unset")
        image = Image.new("RGB", (side, side))
        inputs = dict(loaded.processor(images=image, text=vqa_prompt(loaded.processor, ""),
                                       return_tensors="pt"))
        filler = torch.full((1, seq_len), int(inputs["input_ids"][0, -1]))
        inputs["input_ids"] = torch.cat([inputs["input_ids"], filler], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return {**inputs, "logits_to_keep": 1}
    no_images(image_size, loaded.name)
    ids = {"input_ids": torch.randint(0, 100, (1, seq_len))}
    return {**ids, "logits_to_keep": 1} if loaded.kind == CAUSAL_LM else ids


def _image_side(processor) -> int:
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "crop_size", None) or image_processor.size
    return int(size.get("height") or size.get("shortest_edge"))


def describe(inputs: dict[str, torch.Tensor]) -> str:
    parts = [f"{name} {tuple(t.shape)}" for name, t in inputs.items()
             if name in ("input_ids", "pixel_values")]
    return ", ".join(parts)
