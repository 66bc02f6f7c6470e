"""The vision tower's patch stride, FlexiViT-style (Beyer et al., CVPR 2023): one set of weights
run at another patch size by resizing the patch-embedding kernel with the pseudo-inverse of the
resize (PI-resize).

With B the linear map that bilinearly resizes a p x p patch to q x q, the new kernel w' solves
B^T w' = w, so that <B x, w'> = <x, w> for every patch x: a patch seen at the new scale embeds
to what it did at the trained one. For q >= p the system is underdetermined and the
pseudo-inverse gives its exact minimum-norm solution; for q < p it is the least-squares fit
(FlexiViT resizes with anti-aliasing when shrinking, as done here). The convolution's stride
equals its new kernel, so the tower sees (image_size / q)^2 patches, and the position
embeddings are interpolated to that grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.execute.tower import (
    TowerGeometry,
    image_tokens,
    patch_embedding,
    reshaped_tower,
    tower_family,
    tower_geometry,
    vision_tower,
    with_tower,
)
from mfmaccel.models.record import VLM, LoadedModel


def resize_matrix(old: int, new: int) -> torch.Tensor:
    """B (new^2 x old^2): column j is the old x old basis patch e_j resized to new x new."""
    basis = torch.eye(old * old, dtype=torch.float64).reshape(old * old, 1, old, old)
    resized = F.interpolate(basis, size=(new, new), mode="bilinear", align_corners=False,
                            antialias=new < old)
    return resized.reshape(old * old, new * new).T


def pi_resize(kernel: torch.Tensor, new: int) -> torch.Tensor:
    """The (out, in, new, new) kernel w' with B^T w' = w (exact when growing, least squares
    when shrinking), for a (out, in, p, p) kernel w."""
    out, channels, old, _ = kernel.shape
    if new == old:
        return kernel.detach().clone()
    transposed = resize_matrix(old, new).T  # (old^2, new^2)
    flat = kernel.detach().reshape(out * channels, old * old).T.double()
    solved = torch.linalg.pinv(transposed) @ flat
    return solved.T.reshape(out, channels, new, new).to(kernel.dtype)


def resized_patch_embedding(conv: nn.Conv2d, patch: int) -> nn.Conv2d:
    """A new `patch` x `patch`, stride-`patch` convolution with the PI-resized kernel and the
    same bias."""
    resized = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=patch, stride=patch,
                        bias=conv.bias is not None, dtype=conv.weight.dtype)
    with torch.no_grad():
        resized.weight.copy_(pi_resize(conv.weight, patch))
        if conv.bias is not None:
            resized.bias.copy_(conv.bias)
    return resized.requires_grad_(conv.weight.requires_grad)


def check_patch(patch: int, side: int) -> None:
    """Refuse a patch larger than the image or one that does not divide it."""
    if 1 <= patch <= side and side % patch == 0:
        return
    divisors = [d for d in range(2, side + 1) if side % d == 0]
    near = sorted(divisors, key=lambda d: abs(d - patch))[:3]
    raise UserInputError(f"patch={patch} must divide the {side}-pixel image, between 1 and "
                         f"{side} (e.g. {', '.join(map(str, sorted(near)))}), or give an "
                         f"image_size that is a multiple of {patch}")


def with_patch_stride(model: LoadedModel, *, patch: int,
                      image_size: int | None = None) -> LoadedModel:
    """`model` cutting its images into `patch`-pixel patches (at `image_size` pixels, by default
    the size it reads now), the patch embedding PI-resized; the rest of the weights shared."""
    tower = vision_tower(model)
    tower_family(tower, knob="patch")
    conv = patch_embedding(tower)
    if conv is None:
        raise UserInputError(f"patch: '{model.name}' has a hybrid tower whose patches come from "
                             "a CNN stem, which has no patch kernel to resize; change its "
                             "image_size instead")
    side = image_size if image_size is not None else tower_geometry(model).image_size
    check_patch(patch, side)
    reshaped = reshaped_tower(tower, side=side, patch=patch,
                              conv=resized_patch_embedding(conv, patch))
    tokens = TowerGeometry(image_size=side, patch_size=patch).tokens
    emitted = image_tokens(model, tokens) if model.kind == VLM else tokens
    return with_tower(model, reshaped, side=side, tokens=emitted, setting={"patch": patch})
