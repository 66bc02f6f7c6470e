"""Drafts for speculative decoding: cheap ways to guess the target's next few tokens.

Every draft answers `propose(context, gamma, sampling, generator)` with up to `gamma` tokens and
the distribution each was drawn from (the rejection step needs q(x) to stay exact):
- `ModelDraft`: a smaller model sharing the tokenizer, or a compressed copy of the target
  (pruned blocks, quantized weights: the compression stage's output);
- `EarlyExitDraft`: the target's own first layers with its own final norm and head (weights
  shared, nothing copied): self-speculation without a second model;
- `PromptLookupDraft`: copies what followed the last occurrence of the context's final n-gram
  (code and extraction tasks repeat their prompt a lot); its distributions are one-hot;
- `LookupThenModelDraft`: prompt lookup where it finds a match, a draft model elsewhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.decode.cached import CachedLM
from mfmaccel.decode.sampling import Sampling, distribution, draw
from mfmaccel.errors import UserInputError
from mfmaccel.models.views import shallow_copy


@dataclass
class Proposal:
    tokens: list[int]
    probs: list[torch.Tensor]  # (V,) distribution each token was drawn from


# Stop drafting after a token the draft itself gives less than this probability (HF's
# assistant_confidence_threshold default): the target would likely reject what follows it.
MIN_CONFIDENCE = 0.4


class ModelDraft:
    """A separate causal LM (same tokenizer as the target) proposing autoregressively, up to
    gamma tokens or until it is unsure (`min_confidence`). Where it stops depends on the draft
    alone, so the rejection step stays exact."""

    def __init__(self, module: nn.Module, name: str = "draft model",
                 min_confidence: float = MIN_CONFIDENCE) -> None:
        self.lm = CachedLM(module)
        self.name = name
        self.min_confidence = min_confidence

    @property
    def vocab_size(self) -> int:
        return self.lm.module.get_output_embeddings().out_features

    def propose(self, context: list[int], gamma: int, sampling: Sampling,
                generator: torch.Generator | None = None) -> Proposal:
        proposal = Proposal([], [])
        sequence = list(context)
        for _ in range(gamma):
            logits = self.lm.extend(sequence, last=1)[-1]
            probs = distribution(logits, sampling)
            token = draw(probs, generator) if not sampling.greedy else int(probs.argmax())
            proposal.tokens.append(token)
            proposal.probs.append(probs)
            sequence.append(token)
            if self.min_confidence and float(logits.float().softmax(-1)[token]) < \
                    self.min_confidence:
                break
        return proposal

    def reset(self) -> None:
        self.lm.reset()


def early_exit_model(module: nn.Module, layers: int) -> nn.Module:
    """A view of a decoder-only HF model that runs only its first `layers` blocks, then its own
    final norm and head. Shallow copies share every weight with `module`."""
    from mfmaccel.compress.blocks import decoder_body, decoder_layers
    body, blocks = decoder_body(module), decoder_layers(module)
    if not any(child is body for child in module.children()):
        raise UserInputError(f"{type(module).__name__}: early-exit drafts need a plain "
                             "decoder-only model (e.g. Llama, Qwen2, GPT-2)")
    if not 0 < layers < len(blocks):
        raise UserInputError(f"an early-exit draft needs 1..{len(blocks) - 1} layers, "
                             f"got {layers}")
    shallow, new_body = shallow_copy(module), shallow_copy(body)
    list_name = next(name for name, child in body.named_children() if child is blocks)
    new_body._modules[list_name] = nn.ModuleList(list(blocks)[:layers])
    new_body.config = copy.copy(body.config)
    new_body.config.num_hidden_layers = layers  # GPT-2's n_layer through its attribute map
    if hasattr(new_body.config, "layer_types") and new_body.config.layer_types:
        new_body.config.layer_types = new_body.config.layer_types[:layers]
    shallow._modules[_body_name(module, body)] = new_body
    shallow.config = new_body.config
    return shallow


def _body_name(module: nn.Module, body: nn.Module) -> str:
    return next(name for name, child in module.named_children() if child is body)


class EarlyExitDraft(ModelDraft):
    """Self-speculative draft: the target's first `layers` blocks and its head."""

    def __init__(self, target: nn.Module, layers: int) -> None:
        super().__init__(early_exit_model(target, layers), f"first {layers} layers")


class PromptLookupDraft:
    """Proposes the tokens that followed the most recent earlier occurrence of the context's
    last n-gram (longest n first, from `max_ngram` down to `min_ngram`)."""

    def __init__(self, vocab_size: int, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise UserInputError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, "
                                 f"{max_ngram}")
        self.vocab_size, self.max_ngram, self.min_ngram = vocab_size, max_ngram, min_ngram
        self.name = f"prompt lookup ({min_ngram}-{max_ngram}-grams)"

    def propose(self, context: list[int], gamma: int, sampling: Sampling,
                generator: torch.Generator | None = None) -> Proposal:
        tokens = self._continuation(context, gamma)
        probs = [torch.nn.functional.one_hot(torch.tensor(t), self.vocab_size).float()
                 for t in tokens]
        return Proposal(tokens, probs)

    def _continuation(self, context: list[int], gamma: int) -> list[int]:
        for n in range(min(self.max_ngram, len(context) - 1), self.min_ngram - 1, -1):
            tail = context[-n:]
            for start in range(len(context) - n - 1, -1, -1):
                if context[start:start + n] == tail:
                    return context[start + n:start + n + gamma]
        return []

    def reset(self) -> None:
        pass


class LookupThenModelDraft:
    """Prompt lookup where the context repeats itself (free), a draft model elsewhere."""

    def __init__(self, lookup: PromptLookupDraft, model: ModelDraft) -> None:
        self.lookup, self.model = lookup, model
        self.vocab_size = model.vocab_size
        self.name = f"{lookup.name}, else {model.name}"

    def propose(self, context: list[int], gamma: int, sampling: Sampling,
                generator: torch.Generator | None = None) -> Proposal:
        proposal = self.lookup.propose(context, gamma, sampling, generator)
        return proposal if proposal.tokens else self.model.propose(context, gamma, sampling,
                                                                   generator)

    def reset(self) -> None:
        self.model.reset()


class NoDraft:
    """Proposes nothing: speculative decoding with it is plain autoregressive decoding (one
    target forward per token), with the same sampling and stopping rules."""

    name = "none"

    def propose(self, context: list[int], gamma: int, sampling: Sampling,
                generator: torch.Generator | None = None) -> Proposal:
        return Proposal([], [])

    def reset(self) -> None:
        pass


def draft_from_spec(spec: str | None, target: nn.Module):
    """`None`: no draft; "lookup": prompt lookup; "layers:N": the target's first N layers;
    anything else: a model spec for `load_model` (same tokenizer as the target)."""
    if spec is None:
        return NoDraft()
    vocab = target.get_output_embeddings().out_features
    if spec == "lookup":
        return PromptLookupDraft(vocab)
    if spec.startswith("layers:"):
        count = spec.removeprefix("layers:")
        if not count.isdigit():
            raise UserInputError(f"cannot read draft '{spec}'; write e.g. layers:8")
        return EarlyExitDraft(target, int(count))
    from mfmaccel.models import load_model

    return ModelDraft(load_model(spec).module, spec)
