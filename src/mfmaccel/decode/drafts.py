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

A draft built from the target (early exit, or a compressed copy with `shares_target_cache`)
starts from the target's cache over the prompt instead of running the prompt itself.

A model draft can score only part of the vocabulary (`vocab_ids`, e.g. `code_vocabulary`):
FR-Spec (Zhao et al. 2025) narrows the draft's head to the most frequent tokens, since with a
150k-token vocabulary the head is a quarter of a 0.5B draft's weights and so of its time per
token on a memory-bound CPU. The draft then never proposes the other tokens; the target still
scores them all, so the output is unchanged (greedy) or still exactly the target's
distribution (sampling: q is 0 outside the subset, the residual max(0, p - q) covers them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.models.views import shallow_copy
from mfmaccel.runtime.cached import CachedLM
from mfmaccel.runtime.grid import INT8_PER_CHANNEL
from mfmaccel.runtime.linear import QuantLinear
from mfmaccel.runtime.sampling import Sampling, distribution, draw

SELF_INT8 = "self:int8"  # draft spec: the target's own int8 copy, on its cache


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
    alone, so the rejection step stays exact.

    `shares_target_cache`: the draft is built from the target (a compressed copy, or its first
    layers), with the same attention shapes, so it can start from the target's keys and values
    over the prompt (`CachedLM.adopt`) rather than run the prompt itself: the target prefills
    alone in the first round. A compressed copy's proposals change a little, the output does not
    (the target verifies)."""

    def __init__(self, module: nn.Module, name: str = "draft model",
                 min_confidence: float = MIN_CONFIDENCE,
                 vocab_ids: torch.Tensor | None = None,
                 shares_target_cache: bool = False) -> None:
        self.shares_target_cache = shares_target_cache
        self.vocab_size = module.get_output_embeddings().out_features
        self.head = None if vocab_ids is None else NarrowedHead(module, vocab_ids)
        if self.head is not None:
            module = self.head.view
            name = f"{name}, {len(vocab_ids)}-token head"
        self.lm = CachedLM(module)
        self.name = name
        self.min_confidence = min_confidence

    def propose(self, context: list[int], gamma: int, sampling: Sampling,
                generator: torch.Generator | None = None) -> Proposal:
        if self.head is not None and self.head.cover(context):
            self.lm.module = self.head.view  # the cache stays valid: only the logits change
        proposal = Proposal([], [])
        sequence = list(context)
        for _ in range(gamma):
            logits = self.lm.extend(sequence, last=1)[-1]
            probs = distribution(logits, sampling)
            index = draw(probs, generator) if not sampling.greedy else int(probs.argmax())
            token = index if self.head is None else int(self.head.ids[index])
            proposal.tokens.append(token)
            proposal.probs.append(self._full_vocabulary(probs))
            sequence.append(token)
            if self.min_confidence and float(logits.float().softmax(-1)[index]) < \
                    self.min_confidence:
                break
        return proposal

    def adopt(self, verifier: CachedLM) -> None:
        """Start from the target's cache (only where `shares_target_cache`)."""
        self.lm.adopt(verifier)

    def _full_vocabulary(self, probs: torch.Tensor) -> torch.Tensor:
        """A narrowed head's distribution spread back over the whole vocabulary (0 elsewhere)."""
        if self.head is None:
            return probs
        return torch.zeros(self.vocab_size).index_copy_(0, self.head.ids, probs)

    def reset(self) -> None:
        self.lm.reset()
        if self.head is not None:
            self.head.reset()
            self.lm.module = self.head.view


class NarrowedHead:
    """A causal LM viewed with its head cut down to a token subset: a fixed base
    (`code_vocabulary`) plus every token of the current context, since a prompt brings its own
    identifiers (`benchmarks/draft_vocab.py`: of HumanEval's solution tokens, 97.2% are among
    32,768 chosen ids, 98.5% with the prompt's own). `view` is the model to run: logit i is
    `ids[i]`'s; every other weight is shared, the head's rows copied (packed ones stay packed,
    and only the chosen rows are ever unpacked)."""

    def __init__(self, module: nn.Module, base_ids: torch.Tensor) -> None:
        head = module.get_output_embeddings()
        if not isinstance(head, nn.Linear | QuantLinear):
            raise UserInputError(f"{type(module).__name__}: a narrowed draft head needs a "
                                 "causal LM whose head is a linear layer (e.g. Llama, Qwen2)")
        self.module, self.head = module, head
        self.base_ids = base_ids.sort().values
        self.base_view = self._build(self.base_ids)
        self.reset()

    def reset(self) -> None:
        self.ids, self.view = self.base_ids, self.base_view

    def cover(self, context: list[int]) -> bool:
        """Add the context's tokens the head lacks; True if the view changed."""
        seen = torch.tensor(sorted(set(context)), dtype=torch.long)
        missing = seen[~torch.isin(seen, self.ids)]
        if not len(missing):
            return False
        self.ids = torch.cat([self.ids, missing]).sort().values
        self.view = self._build(self.ids)
        return True

    def _build(self, ids: torch.Tensor) -> nn.Module:
        view = shallow_copy(self.module)
        view.set_output_embeddings(_head_rows(self.head, ids))
        return view


def _head_rows(head: nn.Module, ids: torch.Tensor) -> nn.Module:
    bias = None if head.bias is None else head.bias.detach()[ids]
    if isinstance(head, QuantLinear):
        return QuantLinear.from_quantized(head.quantized_rows(ids), bias)
    rows = head.weight.detach()
    layer = type(head)(head.in_features, len(ids), bias=bias is not None)  # e.g. FewRowsLinear
    layer.weight = nn.Parameter(rows[ids].clone(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.clone(), requires_grad=False)
    return layer.to(rows.dtype)


def code_vocabulary(tokenizer, size: int, *, vocab_size: int, text: str | None = None
                    ) -> torch.Tensor:
    """`size` token ids for a narrowed draft head, sorted: every special token, then the most
    frequent in Python source (by default 1M characters of the standard library's,
    `data.code.python_source_text`), then the rest in the tokenizer's id order, which for BPE
    vocabularies is merge order, itself a frequency rank over the tokenizer's training text.
    Built from code no benchmark draws from, so it does not peek at one."""
    if not 0 < size < vocab_size:
        raise UserInputError(f"a narrowed draft vocabulary needs 1..{vocab_size - 1} tokens, "
                             f"got {size}; pick fewer, or leave the head whole")
    if text is None:
        from mfmaccel.data.code import python_source_text
        text = python_source_text()
    lines = text.splitlines(keepends=True)
    chunks = ["".join(lines[i:i + 2000]) for i in range(0, len(lines), 2000)]
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in tokenizer(chunks, add_special_tokens=False, verbose=False).input_ids:
        ids = torch.tensor(ids, dtype=torch.long)
        counts += torch.bincount(ids[ids < vocab_size], minlength=vocab_size)
    special = [i for i in set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
               if i < vocab_size]
    counts[special] = counts.max() + 1  # always kept: EOS and chat markers end every answer
    score = counts - torch.arange(vocab_size, dtype=torch.float64) / vocab_size  # ties: by id
    return score.topk(size).indices.sort().values


def early_exit_model(module: nn.Module, layers: int) -> nn.Module:
    """A view of a decoder-only HF model that runs only its first `layers` blocks, then its own
    final norm and head. Shallow copies share every weight with `module`."""
    from mfmaccel.runtime.anatomy import decoder_body, decoder_layers
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
    """Self-speculative draft: the target's first `layers` blocks and its head. Those blocks'
    keys and values over the prompt are the target's own, so it takes them from the target's
    cache instead of running the prompt again."""

    def __init__(self, target: nn.Module, layers: int,
                 vocab_ids: torch.Tensor | None = None) -> None:
        super().__init__(early_exit_model(target, layers), f"first {layers} layers",
                         vocab_ids=vocab_ids, shares_target_cache=True)


class PromptLookupDraft:
    """Proposes the tokens that followed the most recent earlier occurrence of the context's
    last n-gram (longest n first, from `max_ngram` down to `min_ngram`)."""

    shares_target_cache = False

    def __init__(self, vocab_size: int, *, max_ngram: int = 3, min_ngram: int = 1) -> None:
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

    @property
    def shares_target_cache(self) -> bool:
        return self.model.shares_target_cache

    def adopt(self, verifier: CachedLM) -> None:
        self.model.adopt(verifier)

    def reset(self) -> None:
        self.model.reset()


class NoDraft:
    """Proposes nothing: speculative decoding with it is plain autoregressive decoding (one
    target forward per token), with the same sampling and stopping rules."""

    name = "none"
    shares_target_cache = False

    def propose(self, context: list[int], gamma: int, sampling: Sampling,
                generator: torch.Generator | None = None) -> Proposal:
        return Proposal([], [])

    def reset(self) -> None:
        pass


def draft_from_spec(spec: str | None, target: nn.Module,
                    vocab_ids: torch.Tensor | None = None):
    """`None`: no draft; "lookup": prompt lookup; "layers:N": the target's first N layers;
    "self:int8": the target's own int8 copy; anything else: a model spec for `load_model`
    (same tokenizer as the target), with `@QUANT` quantized to that uniform spec first.
    `vocab_ids` narrows a model draft's head to those tokens (`code_vocabulary`)."""
    if vocab_ids is not None and spec in (None, "lookup"):
        raise UserInputError("a narrowed draft vocabulary needs a model draft (a model or "
                             "layers:N); drop --draft-vocab or change --draft")
    if spec is None:
        return NoDraft()
    vocab = target.get_output_embeddings().out_features
    if spec == "lookup":
        return PromptLookupDraft(vocab)
    if spec.startswith("layers:"):
        count = spec.removeprefix("layers:")
        if not count.isdigit():
            raise UserInputError(f"cannot read draft '{spec}'; write e.g. layers:8")
        return EarlyExitDraft(target, int(count), vocab_ids)
    if spec.startswith("self:"):
        if spec != SELF_INT8:
            raise UserInputError(f"unknown self-speculative draft '{spec}'; use {SELF_INT8}")
        return ModelDraft(int8_copy(target), "the target's int8 copy", vocab_ids=vocab_ids,
                          shares_target_cache=True)
    return ModelDraft(_draft_model(spec), spec, vocab_ids=vocab_ids)


def _draft_model(spec: str) -> nn.Module:
    """The module of model spec `NAME`, or of `NAME@QUANT`: NAME quantized to the uniform spec
    QUANT (round to nearest, e.g. qwen2.5-coder-0.5b@int8-c-sym), a draft that reads fewer
    bytes per token."""
    from mfmaccel.compress.quantize import quantize_model, uniform_plan
    from mfmaccel.compress.search import parse_spec
    from mfmaccel.models import load_model

    name, _, quant = spec.partition("@")
    if "@" in spec and not quant:
        raise UserInputError(f"draft '{spec}' names no spec after '@'; write e.g. "
                             f"{name}@int8-c-sym")
    model = load_model(name)
    if quant:
        model = quantize_model(model, uniform_plan(model.module, parse_spec(quant)))
    return model.module


def int8_copy(target: nn.Module) -> nn.Module:
    """A copy of `target` with every linear layer (head included) in per-channel int8: on a
    memory-bound CPU it reads a quarter of the bytes per token, and it computes nearly the
    target's keys and values, so as a draft it can start from the target's cache.

    The copy shares the weights it is about to replace (round to nearest only reads them), so
    building it never holds a second fp32 model: the target is left as it was."""
    from mfmaccel.compress.quantize import quantize_module, uniform_plan
    from mfmaccel.runtime.parts import quantizable_parts

    if any(isinstance(layer, QuantLinear) for layer in target.modules()):
        raise UserInputError("the model is quantized already, so an int8 copy would not be "
                             "cheaper; speculate with layers:N, lookup or a smaller model")
    shared = {id(layer.weight): layer.weight for _, layer in quantizable_parts(target).values()}
    module = copy.deepcopy(target, shared)
    return quantize_module(module, uniform_plan(module, INT8_PER_CHANNEL))
