"""How many tokens the draft proposes per round (gamma), chosen round by round.

Rules:
- `fixed`: always the starting gamma.
- `heuristic` (the default): HF's assistant schedule: +2 after a round whose drafts were all
  accepted, -1 otherwise.
- `cost`: the gamma that maximises expected tokens per second (Leviathan et al. 2023, sec.
  3.4). With per-token acceptance a, a round of g drafts commits (1 - a^(g+1)) / (1 - a)
  tokens on average and costs g draft steps plus one verification, so the rule maximises
  (1 - a^(g+1)) / ((1 - a) (g c + 1)), c being a draft step's cost over a verification's. a
  and c are running averages measured in this run (recent rounds weigh more), so the rule
  follows the draft's real cost on this machine: a nearly free draft (prompt lookup) gets
  long rounds, a costly one (a model draft on a CPU) short ones where acceptance drops.
  Measured against `heuristic` by `benchmarks/speculative.py` (docs/decode.md), it was not
  faster, so it is not the default: it takes a verification's cost as the same whatever
  gamma, while verifying 17 tokens costs more than verifying 5.

One `GammaSchedule` passed to successive calls carries what it learned from prompt to prompt,
as HF's assistant keeps its `num_assistant_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mfmaccel.errors import UserInputError

MAX_GAMMA = 64  # HF lets its assistant grow without a cap; 16 cut long accepted runs short
# Draft tokens in the first round: HF's `num_assistant_tokens` default, and where every
# speculative record starts (benchmarks/speculative.py); the schedule adapts from there.
START_GAMMA = 20
RULES = ("cost", "heuristic", "fixed")
DECAY = 0.8  # weight of the previous rounds' evidence at each new round
PRIOR = (3.0, 1.0)  # pseudo-counts of accepted and rejected drafts before any round: a = 0.75


@dataclass
class GammaSchedule:
    gamma: int = 4
    rule: str = "heuristic"
    accepted: float = PRIOR[0]  # discounted accepted drafts
    rejected: float = PRIOR[1]  # discounted rejections
    draft_seconds: float = 0.0  # discounted time spent drafting
    drafted: float = 0.0  # discounted drafted tokens
    verify_seconds: float = 0.0  # discounted time spent verifying
    rounds: float = 0.0  # discounted verifications
    history: list[int] = field(default_factory=list)  # gamma after each round

    def __post_init__(self) -> None:
        if self.gamma < 1:
            raise UserInputError(f"gamma must be at least 1, got {self.gamma}")
        if self.rule not in RULES:
            raise UserInputError(f"unknown gamma rule {self.rule!r}; choose one of "
                                 f"{', '.join(RULES)}")

    @property
    def acceptance(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def observe(self, proposed: int, accepted: int, *, draft_seconds: float,
                verify_seconds: float) -> None:
        """One round: `proposed` drafts of which the first `accepted` were kept."""
        self.verify_seconds = DECAY * self.verify_seconds + verify_seconds
        self.rounds = DECAY * self.rounds + 1
        if proposed:
            self.accepted = DECAY * self.accepted + accepted
            self.rejected = DECAY * self.rejected + (accepted < proposed)
            self.draft_seconds = DECAY * self.draft_seconds + draft_seconds
            self.drafted = DECAY * self.drafted + proposed
            self.gamma = self._next(proposed, accepted)
        self.history.append(self.gamma)

    def _next(self, proposed: int, accepted: int) -> int:
        if self.rule == "heuristic":
            return min(MAX_GAMMA, self.gamma + 2) if accepted == proposed \
                else max(1, self.gamma - 1)
        if self.rule == "cost" and self.drafted and self.verify_seconds:
            ratio = (self.draft_seconds / self.drafted) / (self.verify_seconds / self.rounds)
            return best_gamma(self.acceptance, ratio)
        return self.gamma


def best_gamma(acceptance: float, cost_ratio: float) -> int:
    """argmax over g of expected tokens per unit time, (1 - a^(g+1)) / ((1 - a)(g c + 1))."""
    a = min(max(acceptance, 0.0), 0.999)

    def rate(g: int) -> float:
        return (1 - a ** (g + 1)) / ((1 - a) * (g * cost_ratio + 1))

    return max(range(1, MAX_GAMMA + 1), key=rate)
