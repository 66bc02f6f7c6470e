"""`mfmaccel generate` (`decode.generate.generate_text`) and `mfmaccel cascade`
(`decode.cascade_run.run_cascade`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.root import Bars, app, errors, print_record, quiet_libraries, say, user_errors
from mfmaccel.decode.choices import CascadeTask
from mfmaccel.decode.gamma import START_GAMMA


@app.command("generate")
@user_errors
def generate(
    model: Annotated[str, typer.Option(help="Causal LM: built-in name, HF folder or .gguf")],
    prompt: Annotated[str, typer.Option(help="Text to continue")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most")] = 128,
    draft: Annotated[
        str | None, typer.Option(help="Speculate with: a model of the same tokenizer, "
                                      "'lookup' (prompt lookup), 'layers:N' (early exit) or "
                                      "'self:int8' (the model's own int8 copy)")
    ] = None,
    gamma: Annotated[int, typer.Option(help="Draft tokens in the first round (adapts after)")
                     ] = START_GAMMA,
    temperature: Annotated[float, typer.Option(help="0: greedy")] = 0.0,
    top_k: Annotated[int, typer.Option(help="0: off")] = 0,
    top_p: Annotated[float, typer.Option(help="1: off")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    chat: Annotated[bool, typer.Option(help="Wrap the prompt in the chat template")] = False,
    draft_vocab: Annotated[
        int, typer.Option(help="Narrow a model draft's head to this many frequent code tokens "
                               "(0: whole vocabulary)")] = 0,
    fuse: Annotated[bool, typer.Option(
        help="Fuse the model's blocks first (q/k/v, gate/up, norms; docs/execute.md)")] = False,
) -> None:
    """Print the completion of PROMPT alone on stdout (statistics go to stderr)."""
    quiet_libraries()
    from mfmaccel.decode.generate import generate_text
    from mfmaccel.execute.fusion import fuse as fused
    from mfmaccel.models import load_model
    from mfmaccel.runtime.sampling import Sampling

    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    loaded = fused(load_model(model)) if fuse else load_model(model)
    text, out = generate_text(loaded, prompt, max_new_tokens=max_new_tokens,
                              sampling=sampling, draft=draft, gamma=gamma, chat=chat,
                              draft_vocab=draft_vocab)
    print(text)
    stats = out.stats
    note = f"{len(out.tokens)} tokens in {out.seconds:.2f} s ({out.tokens_per_s:.1f} tok/s)"
    if draft:
        note += (f"; draft {draft}: acceptance {stats.acceptance_rate:.0%}, "
                 f"{stats.mean_accepted_length:.2f} tokens per target pass")
    errors.print(f"[dim]{note}[/]")


@app.command("cascade")
@user_errors
def cascade(
    models: Annotated[list[str], typer.Option("--model", help="Smallest first; repeat")],
    task: Annotated[CascadeTask, typer.Option(
        help="humaneval (self-test: the prompt's examples; theta calibrated on half the "
             "problems), or medvqa2 / medvqa (medvlm / medvlm-v1's benchmark; confidence: "
             "answer margin; calibrated on the val split)")
    ] = CascadeTask.humaneval,
    data: Annotated[
        Path | None, typer.Option(help="Your own HumanEval JSONL or VQA folder (with a val split)")
    ] = None,
    evals: Annotated[
        list[Path] | None, typer.Option("--eval", help="humaneval: the models' `mfmaccel eval "
                                                      "--task humaneval` records, same order "
                                                      "(else generated)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use a fixed subset of this size")] = None,
    samples: Annotated[int, typer.Option(help="Candidates per problem when generating")] = 1,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature of the candidates (0: greedy)")] = 0.0,
    test_lines: Annotated[
        int, typer.Option(help="Tests each model writes per problem for its self-test, "
                               "added to the prompt's examples")] = 0,
    out: Annotated[Path, typer.Option(help="JSON output")] = Path("results/cascade.json"),
) -> None:
    """A small-to-large cascade: each query stays with the first model whose self-test passes
    theta; theta calibrated on queries the report does not use."""
    quiet_libraries()
    from mfmaccel.decode.cascade import EXTRACTED
    from mfmaccel.decode.cascade_run import run_cascade

    with Bars() as bars:
        report = run_cascade(task.value, models, out=out, data=data, evals=evals, limit=limit,
                             samples=samples, temperature=temperature, test_lines=test_lines,
                             progress=bars.task)
    point = report.held_out
    print_record(f"cascade (held out; theta from {report.calibrated_on})", {
        "theta": point.theta, "pass@1": point.pass_rate, "alone": str(report.alone),
        "cost vs largest": point.cost_fraction, "answered by": str(point.answered_by)})
    lower = [model for model, how in report.tokens_counted.items() if how == EXTRACTED]
    if lower:
        say(f"[yellow]note:[/] FLOPs of {', '.join(lower)} count {EXTRACTED}")
    say(f"wrote {out}")
