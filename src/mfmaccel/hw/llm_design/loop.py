"""The closed loop: spec -> model -> Verilog -> lint and simulation -> feedback -> next round.

Why AutoChip's shape: one greedy answer (round 1, k = 1, temperature 0) is VerilogEval's
zero-shot pass@1; the loop then keeps the best of k candidates per round (a pass, else the
fewest mismatches, else one that compiles) and, while it fails, shows the model its own answer
with the tools' feedback, up to R rounds, stopping at the first pass. Every verdict comes from
the sandboxed, unforgeable `simulate`; a passing design is also synthesized (cells, area) and
security-checked (`security`: equivalence with the reference, a CWE-style lint, contamination).
A reply without a module, or a generator that fails on one task, is a recorded failure for
that task, never the end of a suite.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design.feedback import NO_MODULE, feedback_text
from mfmaccel.hw.llm_design.generators import Generator, GeneratorError, Reply
from mfmaccel.hw.llm_design.prompt import (
    CONVERSATION,
    REVISIONS,
    Message,
    extract_module,
    first_messages,
    revision_messages,
)
from mfmaccel.hw.llm_design.security import SecurityReport, security_check
from mfmaccel.hw.llm_design.simulate import (
    COMPILE_ERROR,
    MISMATCH,
    PASS,
    Verdict,
    reference_run,
    simulate,
)
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.hw.llm_design.tools import lint, synthesize
from mfmaccel.records import Record

GENERATOR_ERROR = "generator_error"  # the generator failed on this task (an endpoint's error)
DEFAULT_MAX_NEW_TOKENS = 768


@dataclasses.dataclass
class Candidate(Record):
    """One reply judged: the module read out of it ("" when none), the verdict, lint, and
    the feedback a next round would get."""

    round: int
    index: int
    status: str
    detail: str
    mismatches: int | None
    samples: int | None
    lint: str
    tokens: int
    seconds: float
    feedback: str
    module: str
    reply: str

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclasses.dataclass
class TaskResult(Record):
    """One task through the loop. `pass_at_1`: round 1's first candidate passed (greedy when
    the temperature is 0 or under `greedy_first`: the zero-shot setting); `passed`: any round
    did; `first_pass_round`: the round it did (None if never); `tokens`: generated over every
    candidate and round; `status`/`detail`/`lint` of the kept final candidate;
    `cells`/`transistors`: yosys's count of the passing design (None otherwise);
    `security`: the passing design's security check (None when none passed or it was not
    asked for)."""

    task: str
    passed: bool
    pass_at_1: bool
    first_pass_round: int | None
    rounds_run: int
    tokens: int
    seconds: float
    status: str
    detail: str
    lint: str
    cells: int | None = None
    transistors: int | None = None
    design: str = ""
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    security: SecurityReport | None = None


@dataclasses.dataclass
class LoopSettings(Record):
    """What a run of the loop was asked for (the record says it beside the figures)."""

    rounds: int = 1
    candidates: int = 1
    temperature: float = 0.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = 0
    # Round 1's first reply greedy, the rest sampled: pass@1 is then the zero-shot greedy
    # figure itself, and sampling only brings the diversity the feedback rounds need.
    greedy_first: bool = False
    # How a later round asks again (`prompt.revision_messages`): the conversation continued
    # with the previous answer, or the spec afresh with only the feedback on it.
    revise: str = CONVERSATION

    def __post_init__(self) -> None:
        if self.revise not in REVISIONS:
            raise UserInputError(f"unknown --revise '{self.revise}'; one of "
                                 f"{', '.join(REVISIONS)}")
        if self.rounds < 1:
            raise UserInputError(f"--rounds must be at least 1, got {self.rounds}")
        if self.candidates < 1:
            raise UserInputError(f"--candidates must be at least 1, got {self.candidates}")
        if (self.candidates > 1 or self.greedy_first) and self.temperature <= 0:
            raise UserInputError(f"{self.candidates} candidates per round (or sampled rounds "
                                 "after a greedy first reply) need a temperature above 0 "
                                 "(greedy decoding gives one answer); pass --temperature")
        if self.max_new_tokens < 1:
            raise UserInputError(f"--max-new-tokens must be at least 1, got "
                                 f"{self.max_new_tokens}")


def design(task: DesignTask, generator: Generator, *, rounds: int = 1, candidates: int = 1,
           temperature: float = 0.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
           seed: int = 0, greedy_first: bool = False, revise: str = CONVERSATION,
           synthesize_pass: bool = True, secure_pass: bool = True) -> TaskResult:
    """Run the loop on one task: up to `rounds` rounds of `candidates` replies each, the best
    fed back while none passes. See `LoopSettings` for what is refused."""
    settings = LoopSettings(rounds, candidates, temperature, max_new_tokens, seed, greedy_first,
                            revise)
    return run_task(task, generator, settings, synthesize_pass=synthesize_pass,
                    secure_pass=secure_pass)


def run_task(task: DesignTask, generator: Generator, settings: LoopSettings, *,
             synthesize_pass: bool = True, secure_pass: bool = True) -> TaskResult:
    """The loop on one task under `settings`; a passing design is synthesized
    (`synthesize_pass`) and security-checked (`secure_pass`)."""
    start = time.perf_counter()
    messages = first_messages(task)
    judged: list[Candidate] = []
    best: Candidate | None = None
    for round_number in range(1, settings.rounds + 1):
        batch = _round(task, generator, messages, settings, round_number)
        judged.extend(batch)
        best = max(batch, key=rank)  # max keeps the first of equals: candidate order decides
        if best.passed or best.status == GENERATOR_ERROR:
            break
        if round_number < settings.rounds:
            messages = revision_messages(messages, reply=best.reply, feedback=best.feedback,
                                         revise=settings.revise)
    result = _result(task, judged, best, seconds=time.perf_counter() - start,
                     synthesize_pass=synthesize_pass)
    if result.passed and secure_pass:
        result.security = security_check(result.design, task)
    return result


def _round(task: DesignTask, generator: Generator, messages: list[Message],
           settings: LoopSettings, round_number: int) -> list[Candidate]:
    """One round's replies, each judged; a generator error is one failed candidate."""
    try:
        replies = _replies(generator, messages, settings, round_number)
    except GeneratorError as err:
        return [_failed(round_number, str(err))]
    return [judge(task, reply, round_number=round_number, index=index)
            for index, reply in enumerate(replies)]


def _replies(generator: Generator, messages: list[Message], settings: LoopSettings,
             round_number: int) -> list[Reply]:
    """The round's k replies, seeded apart from every other round's; under `greedy_first`,
    round 1's first is greedy."""
    seed = settings.seed + (round_number - 1) * settings.candidates
    sampled = settings.candidates
    replies = []
    if settings.greedy_first and round_number == 1:
        replies = generator.replies(messages, count=1, temperature=0.0,
                                    max_new_tokens=settings.max_new_tokens, seed=seed)
        sampled, seed = sampled - 1, seed + 1
    if sampled:
        replies += generator.replies(messages, count=sampled, temperature=settings.temperature,
                                     max_new_tokens=settings.max_new_tokens, seed=seed)
    return replies


def judge(task: DesignTask, reply: Reply, *, round_number: int, index: int) -> Candidate:
    """A reply's module linted and simulated, with the feedback it would get."""
    module = extract_module(reply.text)
    if module is None:
        verdict, lint_status, report = Verdict(task.name, NO_MODULE, "no module TopModule"), \
            "", None
    else:
        report = lint(module)
        verdict, lint_status = simulate(module, task), report.status
    return Candidate(round_number, index, verdict.status, verdict.detail, verdict.mismatches,
                     verdict.samples, lint_status, reply.tokens, reply.seconds,
                     "" if verdict.passed else feedback_text(verdict, report,
                                                             module=module or "", task=task),
                     module or "", reply.text)


def _failed(round_number: int, why: str) -> Candidate:
    return Candidate(round_number, 0, GENERATOR_ERROR, why, None, None, "", 0, 0.0, why, "", "")


def rank(candidate: Candidate) -> tuple:
    """Best first under max: a pass, then a mismatch (the smaller share of samples wrong
    first), then one that compiled but did not finish, then the rest."""
    if candidate.passed:
        return (3, 0.0)
    if candidate.status == MISMATCH:
        return (2, -(candidate.mismatches or 0) / max(1, candidate.samples or 1))
    if candidate.status not in (COMPILE_ERROR, NO_MODULE, GENERATOR_ERROR, "refused"):
        return (1, 0.0)
    return (0, 0.0)


def _result(task: DesignTask, judged: list[Candidate], best: Candidate, *, seconds: float,
            synthesize_pass: bool) -> TaskResult:
    """The task's row: the kept candidate's verdict, and its synthesis when it passed."""
    passing = [c for c in judged if c.passed]
    result = TaskResult(
        task.name, best.passed, bool(judged) and judged[0].passed and judged[0].round == 1,
        passing[0].round if passing else None, judged[-1].round,
        sum(c.tokens for c in judged), seconds, best.status, best.detail, best.lint,
        design=best.module, candidates=judged)
    if best.passed and synthesize_pass:
        report = synthesize(best.module)
        result.cells, result.transistors = report.cells, report.transistors
    return result


@dataclasses.dataclass
class SuiteResult(Record):
    """A suite through the loop: pass@1 (round 1, first candidate) and pass with feedback
    (any round) over the `problems` whose reference passes its own bench; `skipped` names the
    others and why."""

    generator: str
    settings: LoopSettings
    problems: int
    pass_at_1: float
    pass_with_feedback: float
    passed_at_1: int
    passed: int
    first_pass_rounds: dict[str, int]
    tokens: int
    seconds: float
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    tasks: list[TaskResult] = dataclasses.field(default_factory=list)
    secure: int | None = None  # passes also security-clean; None when passes went unchecked


def design_suite(tasks: list[DesignTask], generator: Generator, settings: LoopSettings, *,
                 progress: Callable[[int, int], None] | None = None,
                 synthesize_pass: bool = True, secure_pass: bool = True) -> SuiteResult:
    """Each task whose reference passes its own bench through the loop; the rest are skipped
    (named with the reason) and left out of the denominator."""
    start = time.perf_counter()
    results, skipped = [], {}
    for done, task in enumerate(tasks, 1):
        reference = reference_run(task)
        if reference.passed:
            results.append(run_task(task, generator, settings, synthesize_pass=synthesize_pass,
                                    secure_pass=secure_pass))
        else:
            skipped[task.name] = f"reference fails its own bench: {reference.status}"
        if progress is not None:
            progress(done, len(tasks))
    return summarize(results, generator.name, settings, skipped=skipped,
                     seconds=time.perf_counter() - start)


def summarize(results: list[TaskResult], generator: str, settings: LoopSettings, *,
              skipped: dict[str, str], seconds: float) -> SuiteResult:
    """The suite's figures from its rows."""
    count = len(results)
    at_1 = sum(r.pass_at_1 for r in results)
    passed = sum(r.passed for r in results)
    rounds: dict[str, int] = {}
    for r in results:
        if r.first_pass_round is not None:
            rounds[str(r.first_pass_round)] = rounds.get(str(r.first_pass_round), 0) + 1
    checked = all(r.security is not None for r in results if r.passed)
    secure = sum(r.security is not None and r.security.secure for r in results)
    return SuiteResult(generator, settings, count, at_1 / count if count else 0.0,
                       passed / count if count else 0.0, at_1, passed, dict(sorted(rounds.items())),
                       sum(r.tokens for r in results), seconds, skipped, results,
                       secure if checked else None)
