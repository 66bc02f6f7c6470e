"""The patch-stride knob: FlexiViT's PI-resize identity, token counts, the native patch as an
identity, bad patches refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import answer_scores
from mfmaccel.execute.stride import pi_resize, resize_matrix, with_patch_stride
from mfmaccel.models.medvlm import PretrainedTower, build_medvlm
from tests.execute.test_resolution import image_token_count, make_sample, tiny_dinov2


@pytest.fixture(scope="module")
def dinov2_llava():
    return build_medvlm(seed=0, tiny=True, vision=PretrainedTower(image_size=56))


def bilinear(x: torch.Tensor, new: int) -> torch.Tensor:
    return F.interpolate(x, size=(new, new), mode="bilinear", align_corners=False,
                         antialias=new < x.shape[-1])


@pytest.mark.parametrize("old, new", [(8, 16), (14, 16), (14, 28), (16, 8)])
def test_resize_matrix_is_the_bilinear_resize(old, new):
    patch = torch.randn(1, 1, old, old, dtype=torch.float64)
    via_matrix = resize_matrix(old, new) @ patch.reshape(-1)
    torch.testing.assert_close(via_matrix, bilinear(patch, new).reshape(-1))


@pytest.mark.parametrize("old, new", [(8, 16), (14, 16), (14, 28)])
def test_pi_resize_keeps_every_patch_embedding_when_growing(old, new):
    """<x, w> == <resize(x), w'> for any patch x (FlexiViT's identity, exact upwards)."""
    torch.manual_seed(0)
    kernel = torch.randn(6, 3, old, old, dtype=torch.float64)
    patches = torch.randn(5, 3, old, old, dtype=torch.float64)
    resized = pi_resize(kernel, new)
    assert resized.shape == (6, 3, new, new)
    before = torch.einsum("nchw,ochw->no", patches, kernel)
    after = torch.einsum("nchw,ochw->no", bilinear(patches, new), resized)
    torch.testing.assert_close(after, before)


def test_pi_resize_is_least_squares_when_shrinking():
    """Shrinking cannot keep every patch; the kernel solves the normal equations
    B (B^T w' - w) = 0, and fits better than resizing the kernel itself."""
    torch.manual_seed(0)
    kernel = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    resized = pi_resize(kernel, 8)
    b = resize_matrix(16, 8)
    flat, flat_new = kernel.reshape(12, -1).T, resized.reshape(12, -1).T
    residual = b.T @ flat_new - flat
    assert (b @ residual).abs().max() < 1e-9
    naive = bilinear(kernel, 8).reshape(12, -1).T
    assert residual.norm() < (b.T @ naive - flat).norm()


@pytest.mark.parametrize("name, patch", [("tiny_llava", 8), ("dinov2_llava", 14)])
def test_native_patch_gives_the_same_scores(request, name, patch):
    model = request.getfixturevalue(name)
    same = with_patch_stride(model, patch=patch)
    assert answer_scores(same, make_sample()) == answer_scores(model, make_sample())


@pytest.mark.parametrize("name, patch, side, tokens", [
    ("tiny_llava", 16, None, 4), ("tiny_llava", 4, None, 64), ("dinov2_llava", 28, None, 4),
    ("dinov2_llava", 7, None, 64), ("dinov2_llava", 16, 64, 16),
])
def test_image_tokens_follow_the_stride_and_scoring_runs(request, name, patch, side, tokens):
    model = request.getfixturevalue(name)
    strided = with_patch_stride(model, patch=patch, image_size=side)
    conv = (strided.module.model.vision_tower.embeddings.patch_embedding if name == "tiny_llava"
            else strided.module.model.vision_tower.embeddings.patch_embeddings.projection)
    assert conv.kernel_size == conv.stride == (patch, patch)
    assert image_token_count(strided) == tokens
    assert strided.meta["vision_knobs"]["patch"] == patch
    assert len(answer_scores(strided, make_sample())) == 2
    original = request.getfixturevalue(name).module.model.vision_tower.config.patch_size
    assert original in (8, 14)  # the input model keeps its patch


def test_bare_dinov2_tower_at_a_coarser_stride():
    model = with_patch_stride(tiny_dinov2(), patch=28)
    pixels = model.processor(images=make_sample().image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        assert model.module(pixel_values=pixels).last_hidden_state.shape == (1, 1 + 4, 32)


@pytest.mark.parametrize("patch, side, named", [
    (12, None, "patch=12 must divide the 32-pixel image"), (64, None, "patch=64"),
    (0, None, "patch=0"), (16, 60, "patch=16 must divide the 60-pixel image"),
])
def test_bad_patches_are_refused(tiny_llava, patch, side, named):
    with pytest.raises(UserInputError, match=named):
        with_patch_stride(tiny_llava, patch=patch, image_size=side)


def test_hybrid_tower_is_refused():
    with pytest.raises(UserInputError, match="hybrid tower"):
        with_patch_stride(build_medvlm(seed=0, tiny=True), patch=16)
