"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a draft proposes gamma
tokens, the target scores all of them in one forward pass, and a rejection step keeps the
longest prefix the target agrees with, plus one token of its own. The output distribution is
exactly the target's: in greedy mode token for token the target's own greedy output.

Rejection rule for a drafted token x drawn from q: accept with probability min(1, p(x)/q(x));
on the first rejection draw from the residual max(0, p - q) normalised; if every draft
token is accepted, draw a bonus token from the target's next distribution. Greedy is the
special case of one-hot p and q. gamma adapts to the running acceptance (grow after a fully
accepted round, shrink after an early rejection), as in HF's heuristic schedule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from mfmaccel.decode.cached import CachedLM
from mfmaccel.decode.drafts import Proposal
from mfmaccel.decode.sampling import Sampling, distribution, draw
from mfmaccel.errors import UserInputError

MAX_GAMMA = 16


@dataclass
class SpeculativeStats:
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    target_forwards: int = 0
    gammas: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens committed per target forward (accepted drafts + the target's own token)."""
        return (self.accepted + self.rounds) / self.rounds if self.rounds else 0.0


@dataclass
class SpeculativeOutput:
    tokens: list[int]
    seconds: float
    stats: SpeculativeStats

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds else 0.0

    @property
    def next_gamma(self) -> int | None:
        """Where the adaptive gamma ended: the start for the next prompt with the same draft
        (as HF's assistant keeps its num_assistant_tokens across calls), so each prompt does
        not climb from a small gamma again. None if no round ran."""
        return self.stats.gammas[-1] if self.stats.gammas else None


def accept_or_correct(p: torch.Tensor, q: torch.Tensor, token: int,
                      generator: torch.Generator | None) -> int | None:
    """None if the drafted `token` (drawn from q) is accepted under target p, else the
    replacement drawn from the residual distribution."""
    if float(q[token]) <= 0:
        raise ValueError(f"draft token {token} has probability 0 under its own distribution")
    ratio = float(p[token]) / float(q[token])
    if ratio >= 1 or float(torch.rand((), generator=generator)) < ratio:
        return None
    residual = (p - q).clamp(min=0)
    total = float(residual.sum())
    return draw(residual / total if total > 0 else p, generator)


def check_compatible(target: nn.Module, draft) -> None:
    """Draft and target must index the same vocabulary."""
    target_vocab = target.get_output_embeddings().out_features
    if getattr(draft, "vocab_size", target_vocab) != target_vocab:
        raise UserInputError(
            f"the draft's vocabulary ({draft.vocab_size}) differs from the target's "
            f"({target_vocab}); use a draft with the same tokenizer (e.g. qwen2.5-coder-0.5b "
            "for qwen2.5-coder-1.5b)")


def speculative_generate(
    target: nn.Module, draft, prompt: list[int], max_new_tokens: int, gamma: int = 4,
    sampling: Sampling | None = None, adaptive: bool = True,
    eos_token_ids: set[int] | None = None,
) -> SpeculativeOutput:
    """Generate up to `max_new_tokens` after `prompt` with `draft` proposing for `target`
    (greedy unless `sampling` says otherwise)."""
    sampling = sampling or Sampling()
    if gamma < 1:
        raise UserInputError(f"gamma must be at least 1, got {gamma}")
    check_compatible(target, draft)
    eos = eos_token_ids or set()
    generator = sampling.generator()
    verifier = CachedLM(target)
    draft.reset()
    stats = SpeculativeStats()
    sequence = list(prompt)
    new: list[int] = []
    start = time.perf_counter()
    while len(new) < max_new_tokens and not (new and new[-1] in eos):
        room = max_new_tokens - len(new) - 1
        proposal = draft.propose(sequence, min(gamma, room), sampling, generator) if room \
            else Proposal([], [])
        committed = _verify(verifier, sequence, proposal, sampling, generator, stats)
        for token in committed:
            if len(new) < max_new_tokens and not (new and new[-1] in eos):
                new.append(token)
        sequence = list(prompt) + new
        if adaptive and proposal.tokens:
            fully = len(committed) == len(proposal.tokens) + 1
            gamma = min(MAX_GAMMA, gamma + 2) if fully else max(1, gamma - 1)
        stats.gammas.append(gamma)
    stats.target_forwards = verifier.forwards
    return SpeculativeOutput(new, time.perf_counter() - start, stats)


def _verify(verifier: CachedLM, sequence: list[int], proposal: Proposal, sampling: Sampling,
            generator, stats: SpeculativeStats) -> list[int]:
    """Score the proposal with one target forward; the tokens this round commits.

    The last token of `sequence` is never in the verifier's cache (it was just committed), so
    the forward covers it and the drafts: gamma + 1 distributions, p_1 .. p_(gamma+1)."""
    drafted = proposal.tokens
    logits = verifier.extend(sequence + drafted, last=len(drafted) + 1)
    distributions = list(distribution(logits, sampling))
    stats.rounds += 1
    stats.proposed += len(drafted)
    committed: list[int] = []
    for p, q, token in zip(distributions, proposal.probs, drafted, strict=False):
        replacement = accept_or_correct(p, q, token, generator)
        if replacement is not None:
            committed.append(replacement)
            break
        committed.append(token)
        stats.accepted += 1
    else:
        committed.append(_pick(distributions[len(drafted)], sampling, generator))
    return committed


def _pick(probs: torch.Tensor, sampling: Sampling, generator) -> int:
    return int(probs.argmax()) if sampling.greedy else draw(probs, generator)
