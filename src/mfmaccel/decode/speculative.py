"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a draft proposes gamma
tokens, the target scores all of them in one forward pass, and a rejection step keeps the
longest prefix the target agrees with, plus one token of its own. The output distribution is
exactly the target's: in greedy mode token for token the target's own greedy output.

Rejection rule for a drafted token x drawn from q: accept with probability min(1, p(x)/q(x));
on the first rejection draw from the residual max(0, p - q) normalised; if every draft
token is accepted, draw a bonus token from the target's next distribution. Greedy is the
special case of one-hot p and q. gamma is chosen round by round (`decode.gamma`): by default
with HF's assistant schedule, or to maximise expected tokens per second from the measured draft
and verification costs and the running acceptance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.decode.drafts import Proposal
from mfmaccel.decode.gamma import GammaSchedule
from mfmaccel.errors import UserInputError
from mfmaccel.runtime.cached import CachedLM
from mfmaccel.runtime.sampling import Sampling, distribution, draw


@dataclass
class SpeculativeStats:
    """Counts over one call (gamma round by round is the `GammaSchedule`'s `history`)."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    target_forwards: int = 0

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
    first_token_seconds: float = 0.0  # the prompt's round: prefill and the first token out

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds else 0.0


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
    target: nn.Module, draft, prompt: list[int], *, max_new_tokens: int,
    gamma: int | GammaSchedule = 4, sampling: Sampling | None = None,
    eos_token_ids: set[int] | None = None,
    should_stop: Callable[[list[int]], bool] | None = None,
) -> SpeculativeOutput:
    """Generate up to `max_new_tokens` after `prompt` with `draft` proposing for `target`
    (greedy unless `sampling` says otherwise). `gamma`: the starting number of drafts per
    round under the default rule, or a `GammaSchedule`, which keeps what it learns for the
    next call. `should_stop(new_tokens)`, asked after each round, ends the call early (a
    caller that needs only the first code block stops once it is closed)."""
    sampling = sampling or Sampling()
    schedule = gamma if isinstance(gamma, GammaSchedule) else GammaSchedule(gamma)
    check_compatible(target, draft)
    eos = eos_token_ids or set()
    generator = sampling.generator()
    verifier = CachedLM(target)
    draft.reset()
    stats = SpeculativeStats()
    sequence = list(prompt)
    new: list[int] = []
    start, first_token = time.perf_counter(), None
    while len(new) < max_new_tokens and not (new and new[-1] in eos):
        if should_stop is not None and new and should_stop(new):
            break
        room = max_new_tokens - len(new) - 1
        adopting = draft.shares_target_cache and not verifier.tokens  # the target prefills alone
        drafting = time.perf_counter()
        proposal = draft.propose(sequence, min(schedule.gamma, room), sampling, generator) \
            if room and not adopting else Proposal([], [])
        verifying = time.perf_counter()
        committed = _verify(verifier, sequence, proposal, sampling=sampling, generator=generator,
                            stats=stats)
        if adopting:
            draft.adopt(verifier)
        schedule.observe(len(proposal.tokens), len(committed) - 1,
                         draft_seconds=verifying - drafting,
                         verify_seconds=time.perf_counter() - verifying)
        for token in committed:
            if len(new) < max_new_tokens and not (new and new[-1] in eos):
                new.append(token)
        first_token = first_token or time.perf_counter() - start
        sequence = list(prompt) + new
    stats.target_forwards = verifier.forwards
    return SpeculativeOutput(new, time.perf_counter() - start, stats, first_token or 0.0)


def _verify(verifier: CachedLM, sequence: list[int], proposal: Proposal, *, sampling: Sampling,
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
