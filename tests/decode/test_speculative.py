"""Speculative decoding: greedy output equals the target's own, sampling preserves the target's
distribution (chi-square), every draft kind works, and bad input is refused."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.decode.drafts import (
    EarlyExitDraft,
    ModelDraft,
    NarrowedHead,
    PromptLookupDraft,
    code_vocabulary,
    draft_from_spec,
    early_exit_model,
    int8_copy,
)
from mfmaccel.decode.gamma import MAX_GAMMA, GammaSchedule, best_gamma
from mfmaccel.decode.speculative import accept_or_correct, speculative_generate
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.runtime.cached import CachedLM, common_prefix
from mfmaccel.runtime.engine import greedy_generate
from mfmaccel.runtime.grid import INT8_PER_CHANNEL
from mfmaccel.runtime.linear import QuantLinear
from mfmaccel.runtime.sampling import Sampling, distribution

PROMPTS = ["def add(a, b):\n    return a + b\n\ndef add(", "The quick brown fox", "x = [1, 2, 3]"]


@pytest.fixture(scope="module")
def target():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def other_draft():
    return load_model("tiny-llama", seed=1)


def _ids(model, text: str) -> list[int]:
    return model.tokenizer(text).input_ids


def _greedy(model, prompt: list[int], n: int) -> list[int]:
    return greedy_generate(model.module, torch.tensor([prompt]), n).tokens


def _even_ids(model) -> torch.Tensor:
    return torch.arange(0, model.module.config.vocab_size, 2)


@pytest.fixture(scope="module")
def int8_target(target):
    """The target's own int8 copy: a self-speculative draft that can share its cache."""
    return int8_copy(target.module)


def _drafts(target, other_draft, int8_target=None):
    vocab = target.module.config.vocab_size
    drafts = {"model": ModelDraft(other_draft.module),
              "early-exit": EarlyExitDraft(target.module, 1),
              "lookup": PromptLookupDraft(vocab), "self": ModelDraft(target.module),
              # half the vocabulary: the other half comes only from the context or the target
              "narrowed": ModelDraft(target.module, vocab_ids=_even_ids(target))}
    if int8_target is not None:
        drafts["self-int8-shared"] = ModelDraft(int8_target, shares_target_cache=True)
    return drafts


@pytest.mark.parametrize("kind", ["model", "early-exit", "lookup", "self", "narrowed",
                                  "self-int8-shared"])
@pytest.mark.parametrize("gamma,rule", [(1, "fixed"), (4, "heuristic"), (4, "cost"),
                                        (7, "fixed")])
def test_greedy_speculation_reproduces_the_targets_greedy_tokens(
        target, other_draft, int8_target, kind, gamma, rule) -> None:
    draft = _drafts(target, other_draft, int8_target)[kind]
    for text in PROMPTS:
        prompt = _ids(target, text)
        out = speculative_generate(target.module, draft, prompt, max_new_tokens=24,
                                   gamma=GammaSchedule(gamma, rule))
        assert out.tokens == _greedy(target, prompt, 24)
        stats = out.stats
        assert stats.target_forwards == stats.rounds and stats.accepted <= stats.proposed
        if kind in ("self", "self-int8-shared"):
            assert stats.rounds < 24


@pytest.mark.parametrize("kind", ["early-exit", "self-int8-shared"])
def test_a_draft_sharing_the_targets_cache_never_runs_the_prompt(
        target, other_draft, int8_target, kind) -> None:
    """The target prefills alone; the draft starts from its keys and values, so every forward
    the draft runs is over the tokens committed since (none as long as the prompt)."""
    draft = _drafts(target, other_draft, int8_target)[kind]
    lengths, extend = [], draft.lm.extend

    def counting(sequence, last=None):  # tokens the draft's forward runs: those not cached
        lengths.append(len(sequence) - min(common_prefix(draft.lm.tokens, sequence),
                                           len(sequence) - 1))
        return extend(sequence, last)

    draft.lm.extend = counting
    prompt = _ids(target, PROMPTS[0])
    out = speculative_generate(target.module, draft, prompt, max_new_tokens=16,
                               gamma=GammaSchedule(4, "fixed"))
    assert out.tokens == _greedy(target, prompt, 16)
    assert lengths and max(lengths) < len(prompt) // 2
    assert out.stats.proposed > 0


def test_self_int8_is_a_quantized_copy_on_the_targets_cache(target) -> None:
    before = {k: v.clone() for k, v in target.module.state_dict().items()}
    draft = draft_from_spec("self:int8", target.module)
    assert draft.shares_target_cache
    after = target.module.state_dict()  # it shared the target's weights, and left them be
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    fresh = load_model("tiny-llama")
    reference = quantize_model(fresh, uniform_plan(fresh.module, INT8_PER_CHANNEL)).module
    assert all(torch.equal(v, reference.state_dict()[k])
               for k, v in draft.lm.module.state_dict().items())
    assert isinstance(draft.lm.module.get_output_embeddings(), QuantLinear)
    assert type(target.module.get_output_embeddings()) is not QuantLinear  # a copy: untouched
    with pytest.raises(UserInputError, match="use self:int8"):
        draft_from_spec("self:int4", target.module)
    with pytest.raises(UserInputError, match="quantized already"):
        draft_from_spec("self:int8", draft.lm.module)


def test_a_model_draft_can_be_quantized_by_its_spec(target) -> None:
    """NAME@QUANT: the named model, uniformly quantized, proposing losslessly."""
    draft = draft_from_spec("tiny-llama@int4-g32-sym", target.module)
    layers = [m for m in draft.lm.module.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.spec.label == "int4-g32-sym" for m in layers)
    prompt = [5, 17, 33, 2]
    fast = speculative_generate(target.module, draft, prompt, max_new_tokens=10)
    plain = greedy_generate(target.module, torch.tensor([prompt]), 10).tokens
    assert fast.tokens == plain
    with pytest.raises(UserInputError, match="names no spec after '@'"):
        draft_from_spec("tiny-llama@", target.module)
    with pytest.raises(UserInputError):
        draft_from_spec("tiny-llama@int9-g32", target.module)


def test_an_early_exit_draft_on_the_targets_cache_scores_as_on_its_own(target) -> None:
    """Its blocks' keys and values are the target's: adopting them changes nothing."""
    prompt = _ids(target, PROMPTS[1])
    verifier, own, shared = (CachedLM(target.module), EarlyExitDraft(target.module, 1),
                             EarlyExitDraft(target.module, 1))
    verifier.extend(prompt)
    shared.adopt(verifier)
    follow = prompt + [7, 11]
    assert torch.allclose(shared.lm.extend(follow), own.lm.extend(follow)[-2:], atol=1e-5)


def test_a_perfect_draft_is_always_accepted(target) -> None:
    prompt = _ids(target, PROMPTS[1])
    draft = ModelDraft(target.module, min_confidence=0.0)  # always drafts gamma tokens
    out = speculative_generate(target.module, draft, prompt, max_new_tokens=30,
                               gamma=GammaSchedule(5, "fixed"))
    assert out.stats.acceptance_rate == 1.0
    assert out.stats.target_forwards == 5  # 6 tokens per verification pass
    assert out.stats.mean_accepted_length == 6.0


def test_rejection_step_returns_the_target_distribution() -> None:
    """Draw x ~ q, keep it or correct it: the result must be distributed as p."""
    p = torch.tensor([0.05, 0.4, 0.1, 0.25, 0.2, 0.0])
    q = torch.tensor([0.3, 0.1, 0.3, 0.1, 0.1, 0.1])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    n = 20000
    for _ in range(n):
        token = int(torch.multinomial(q, 1, generator=generator))
        replacement = accept_or_correct(p, q, token, generator)
        counts[token if replacement is None else replacement] += 1
    assert counts[5] == 0  # the target never emits what it gives probability 0
    support = p > 0
    observed = counts[support].double().numpy()

    def expected(dist: torch.Tensor):
        return (dist[support].double() / dist[support].double().sum() * n).numpy()

    assert chisquare(observed, expected(p)).pvalue > 1e-3
    assert chisquare(observed, expected(q)).pvalue < 1e-6  # and the test can tell p from q


@pytest.mark.parametrize("narrowed", [False, True])
def test_sampled_speculation_matches_the_targets_joint_distribution(
        target, other_draft, narrowed) -> None:
    """Chi-square on the first two sampled tokens against the target's exact probabilities,
    with a whole draft and with one whose narrowed head lacks every token the target emits."""
    sampling = dict(temperature=1.0, top_k=3)
    prompt = _ids(target, PROMPTS[2])
    with torch.inference_mode():
        first = distribution(target.module(input_ids=torch.tensor([prompt])).logits[0, -1],
                             Sampling(**sampling))
        exact = {}
        for a in first.nonzero().flatten().tolist():
            logits = target.module(input_ids=torch.tensor([prompt + [a]])).logits[0, -1]
            second = distribution(logits, Sampling(**sampling))
            for b in second.nonzero().flatten().tolist():
                exact[(a, b)] = float(first[a] * second[b])
    n = 1200
    counts = dict.fromkeys(exact, 0)
    # half the draft's vocabulary, the target's first two tokens excluded from it: the residual
    # must bring in what the draft can never propose
    ids = _even_ids(other_draft)
    ids = ids[~torch.isin(ids, torch.tensor(sorted({t for pair in exact for t in pair})))]
    draft = ModelDraft(other_draft.module, vocab_ids=ids) if narrowed else \
        ModelDraft(other_draft.module)
    for seed in range(n):
        out = speculative_generate(target.module, draft, prompt, max_new_tokens=2,
                                   gamma=GammaSchedule(2, "fixed"),
                                   sampling=Sampling(**sampling, seed=seed))
        counts[tuple(out.tokens)] += 1  # KeyError: a pair the target cannot produce
    keys = sorted(exact)
    observed = [counts[k] for k in keys]
    total = sum(exact.values())
    expected = [exact[k] / total * n for k in keys]
    assert chisquare(observed, expected).pvalue > 1e-3


def test_prompt_lookup_copies_what_followed_the_last_ngram() -> None:
    draft = PromptLookupDraft(vocab_size=50, max_ngram=2)
    proposal = draft.propose([1, 2, 3, 4, 9, 1, 2], 3, Sampling())
    assert proposal.tokens == [3, 4, 9]
    assert all(float(p[t]) == 1.0 for p, t in zip(proposal.probs, proposal.tokens, strict=True))
    assert draft.propose([5, 6, 7], 3, Sampling()).tokens == []


def test_early_exit_draft_shares_the_targets_weights(target) -> None:
    shallow = early_exit_model(target.module, 1)
    own = {id(p) for p in target.module.parameters()}
    assert {id(p) for p in shallow.parameters()} <= own
    assert target.module.config.num_hidden_layers == 2  # the target is untouched
    ids = torch.tensor([_ids(target, PROMPTS[0])])
    with torch.inference_mode():
        full = target.module(input_ids=ids).logits
        assert not torch.allclose(shallow(input_ids=ids).logits, full)
    with pytest.raises(UserInputError, match="layers"):
        early_exit_model(target.module, 2)


def test_bad_input_is_refused(target) -> None:
    prompt = _ids(target, PROMPTS[0])
    draft = ModelDraft(target.module)
    with pytest.raises(UserInputError, match="gamma"):
        speculative_generate(target.module, draft, prompt, max_new_tokens=4, gamma=0)
    with pytest.raises(UserInputError, match="empty prompt"):
        speculative_generate(target.module, draft, [], max_new_tokens=4)
    limit = target.module.config.max_position_embeddings
    with pytest.raises(UserInputError, match="context window"):
        speculative_generate(target.module, draft, [5] * (limit + 1), max_new_tokens=4)
    alien = PromptLookupDraft(vocab_size=target.module.config.vocab_size + 7)
    with pytest.raises(UserInputError, match="vocabulary"):
        speculative_generate(target.module, alien, prompt, max_new_tokens=4)
    with pytest.raises(UserInputError, match="temperature"):
        Sampling(temperature=-1)


def test_sampling_filters_keep_the_top_tokens() -> None:
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert distribution(logits, Sampling()).tolist() == [1.0, 0.0, 0.0, 0.0]
    top2 = distribution(logits, Sampling(temperature=1.0, top_k=2))
    assert top2[2:].sum() == 0 and top2.sum() == pytest.approx(1.0)
    nucleus = distribution(logits, Sampling(temperature=1.0, top_p=0.5))
    assert nucleus.tolist() == [1.0, 0.0, 0.0, 0.0]  # the top token alone holds > 50%
    assert list(itertools.accumulate(distribution(logits, Sampling(temperature=1.0)).tolist()))[
        -1] == pytest.approx(1.0)


def test_cached_lm_returns_only_the_positions_asked_for(target):
    """`last=k` runs the head on the last k new positions only, with the same values."""
    from mfmaccel.runtime.cached import CachedLM

    prompt = _ids(target, PROMPTS[0])
    full = CachedLM(target.module).extend(prompt)
    lm = CachedLM(target.module)
    last = lm.extend(prompt, last=3)
    assert full.shape[0] == len(prompt) and last.shape[0] == 3
    torch.testing.assert_close(last, full[-3:], rtol=1e-4, atol=1e-4)
    assert lm.extend([*prompt, 5, 6], last=10).shape[0] == 2  # never more than were run


def test_model_draft_stops_where_it_is_unsure(target):
    """A draft stops after a token it gives less than `min_confidence`; greedy output is
    the target's own whatever the threshold."""
    prompt = _ids(target, PROMPTS[1])
    never_sure = ModelDraft(target.module, min_confidence=1.01)
    always = ModelDraft(target.module, min_confidence=0.0)
    assert len(never_sure.propose(prompt, 5, Sampling()).tokens) == 1
    assert len(always.propose(prompt, 5, Sampling()).tokens) == 5
    reference = _greedy(target, prompt, 12)
    for draft in (never_sure, always):
        assert speculative_generate(target.module, draft, prompt,
                                    max_new_tokens=12).tokens == reference


def test_one_schedule_learns_across_prompts(target):
    """A perfect draft (the target itself) raises gamma, and the schedule handed to the next
    call starts where the last one ended. (The cost rule is checked on measured costs below:
    on a tiny model a draft step can cost as much as a verification, which rightly keeps
    gamma small.)"""
    prompt = _ids(target, PROMPTS[1])
    draft = ModelDraft(target.module, min_confidence=0.0)
    schedule = GammaSchedule(2, "heuristic")
    out = speculative_generate(target.module, draft, prompt, max_new_tokens=20, gamma=schedule)
    assert schedule.gamma == schedule.history[-1] and schedule.gamma > 2
    assert len(schedule.history) == out.stats.rounds
    again = speculative_generate(target.module, draft, prompt, max_new_tokens=20, gamma=schedule)
    assert again.stats.rounds < out.stats.rounds  # no climb from 2 this time


def test_cost_rule_trades_acceptance_against_draft_cost() -> None:
    """Leviathan et al.'s expected-throughput optimum: a free draft drafts the most, a costly
    or unreliable one the least, and the optimum grows with acceptance."""
    assert best_gamma(0.9, 0.0) == MAX_GAMMA
    assert best_gamma(0.9, 2.0) == 1
    assert best_gamma(0.2, 0.3) == 1
    assert best_gamma(0.6, 0.1) < best_gamma(0.8, 0.1) < best_gamma(0.95, 0.1)
    schedule = GammaSchedule(4, "cost")
    for _ in range(20):  # every draft accepted, a draft step 5% of a verification
        schedule.observe(schedule.gamma, schedule.gamma, draft_seconds=0.05 * schedule.gamma,
                         verify_seconds=1.0)
    assert schedule.acceptance > 0.95 and schedule.gamma >= 10
    for _ in range(30):  # the first draft always rejected (the long accepted runs above
        schedule.observe(schedule.gamma, 0, draft_seconds=0.05 * schedule.gamma,
                         verify_seconds=1.0)  # take a while to fade)
    assert schedule.gamma == 1
    with pytest.raises(UserInputError, match="unknown gamma rule"):
        GammaSchedule(4, "greedy")


@pytest.mark.parametrize("packed", [False, True])
def test_a_narrowed_head_scores_its_tokens_as_the_whole_head_does(packed) -> None:
    model = load_model("tiny-llama")
    if packed:
        quantize_model(model, uniform_plan(model.module, INT8_PER_CHANNEL))
    ids = _even_ids(model)
    view = NarrowedHead(model.module, ids).view
    prompt = torch.tensor([_ids(model, PROMPTS[0])])
    with torch.inference_mode():
        full = model.module(input_ids=prompt).logits
        narrow = view(input_ids=prompt).logits
    assert narrow.shape[-1] == len(ids) == full.shape[-1] // 2 + full.shape[-1] % 2
    torch.testing.assert_close(narrow, full[..., ids], rtol=1e-5, atol=1e-5)
    assert model.module.get_output_embeddings().out_features == full.shape[-1]  # untouched
    assert type(view.get_output_embeddings()) is type(model.module.get_output_embeddings())


def test_a_narrowed_head_takes_in_the_contexts_tokens(target) -> None:
    head = NarrowedHead(target.module, _even_ids(target))
    base = len(head.ids)
    assert not head.cover([2, 4, 6])
    assert head.cover([2, 5, 7, 7]) and len(head.ids) == base + 2
    assert head.view.get_output_embeddings().out_features == base + 2
    head.reset()
    assert len(head.ids) == base


def test_code_vocabulary_keeps_special_tokens_and_frequent_code(target) -> None:
    tokenizer = target.tokenizer
    vocab = target.module.config.vocab_size
    text = "def f(x):\n    return x\n" * 50
    ids = code_vocabulary(tokenizer, 40, vocab_size=vocab, text=text)
    assert len(ids) == 40 and torch.equal(ids, ids.sort().values)
    assert set(tokenizer.all_special_ids) <= set(ids.tolist())
    assert set(tokenizer("return", add_special_tokens=False).input_ids) <= set(ids.tolist())
    with pytest.raises(UserInputError, match="narrowed draft vocabulary"):
        code_vocabulary(tokenizer, vocab, vocab_size=vocab, text=text)
    with pytest.raises(UserInputError, match="model draft"):
        draft_from_spec("lookup", target.module, ids)
