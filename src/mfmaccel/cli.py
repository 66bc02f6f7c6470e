"""The `mfmaccel` command: each subcommand is a thin call into a layer below."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mfmaccel.decode.gamma import START_GAMMA
from mfmaccel.errors import UserInputError
from mfmaccel.progress import PlainProgress
from mfmaccel.threads import configure_threads

# Before any command imports torch: OpenMP reads its wait policy once, when torch loads it.
try:
    configure_threads()
except UserInputError as err:  # a bad MFMACCEL_THREADS: one line and exit 2, like any bad input
    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise SystemExit(UserInputError.exit_code) from None

app = typer.Typer(
    help="Make multimodal foundation models small and fast on real hardware.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
console = Console()
errors = Console(stderr=True)


def say(message: str) -> None:
    """Print one line unwrapped, so a path in it stays whole for the user to copy."""
    console.print(message, soft_wrap=True)


class CascadeTask(StrEnum):
    humaneval = "humaneval"
    medvqa = "medvqa"


class Task(StrEnum):
    ppl = "ppl"
    humaneval = "humaneval"
    medvqa = "medvqa"
    speed = "speed"


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends a command with one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserInputError as err:
            errors.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=UserInputError.exit_code) from None

    return wrapper


def quiet_libraries() -> None:
    """Keep library warnings and progress bars out of the user's console."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class Bars:
    """Progress of each labelled step: rich bars (with the time left) on a terminal, and
    without one (stderr not a TTY) plain lines every few seconds (`mfmaccel.progress`);
    nothing shows until a step reports, so a command that fails early prints its error alone."""

    def __init__(self) -> None:
        self.plain = None if errors.is_terminal else PlainProgress()
        self.progress = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=errors, transient=True,
        )

    def task(self, label: str) -> Callable[[int, int], None]:
        if self.plain is not None:
            return self.plain.task(label)
        task_id = self.progress.add_task(label, total=None, visible=False)

        def update(done: int, total: int) -> None:
            if not self.progress.live.is_started:
                self.progress.start()
            self.progress.update(task_id, completed=done, total=total, visible=done < total)

        return update

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def print_record(title: str, record: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            continue  # per-item detail goes to the JSON file only
        table.add_row(key, str(value))
    console.print(table)


@app.command("models")
def list_models() -> None:
    """List the built-in models, whether their packages are installed, and whether cached."""
    import importlib.util

    from mfmaccel.models import BUILTIN_MODELS
    from mfmaccel.runtime.cachedir import cache_root

    table = Table("name", "upstream", "installed", "converted")
    for model in BUILTIN_MODELS.values():
        installed = all(
            importlib.util.find_spec(p.replace("-", "_")) for p in model.weights.packages
        )
        converted = (cache_root() / "models" / model.name).is_dir()
        table.add_row(model.name, model.upstream, "yes" if installed else "no",
                      "yes" if converted or model.weights.fmt != "gguf" else "no")
    console.print(table)
    console.print("Also: medvlm (SmolLM2 + the trained parts in weights/medvlm), medvlm-base "
                  "(before fine-tuning); tiny-llama, tiny-gpt2, tiny-qwen2, tiny-bert, tiny-vit, "
                  "tiny-llava (random init, for tests); a Hugging Face folder, or a .gguf file.")


@app.command("eval")
@user_errors
def evaluate(
    model: Annotated[str, typer.Option(help="Built-in name, tiny-<arch>, HF folder or .gguf")],
    task: Annotated[Task, typer.Option(help="What to measure")],
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Your own data: .txt/.jsonl, HumanEval JSONL, VQA folder")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate a fixed subset of this size")] = None,
    context: Annotated[int | None, typer.Option(
        help="ppl: window length in tokens (default 512, or the model's window if shorter)")
    ] = None,
    stride: Annotated[int | None, typer.Option(help="ppl: window step (default: context)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="ppl: score at most this many")] = None,
    mode: Annotated[str, typer.Option(help="medvqa: rank or generate")] = "rank",
    max_new_tokens: Annotated[
        int | None, typer.Option(help="humaneval (384) / speed (64): tokens to generate")
    ] = None,
    seed: Annotated[int, typer.Option(help="Subset, tiny-model and sampling seed")] = 0,
    samples: Annotated[int, typer.Option(help="humaneval: completions per problem")] = 1,
    temperature: Annotated[
        float, typer.Option(help="humaneval: sampling temperature (0: greedy)")] = 0.0,
    top_p: Annotated[float, typer.Option(help="humaneval: nucleus sampling mass")] = 0.95,
) -> None:
    """Measure a model on one task; print a table and write JSON."""
    quiet_libraries()
    from mfmaccel.evaluate.run import TaskOptions, run_evaluation
    from mfmaccel.fileio import check_replaceable_file

    out = out or Path("results") / f"{Path(model).name}-{task.value}.json"
    check_replaceable_file(out)  # refuse a user's file before the evaluation, not after
    with Bars() as bars:
        options = TaskOptions(context=context, stride=stride, max_tokens=max_tokens, mode=mode,
                              max_new_tokens=max_new_tokens, samples=samples,
                              temperature=temperature, top_p=top_p, seed=seed)
        record = run_evaluation(model, task.value, data=data, limit=limit, options=options,
                                seed=seed, progress=bars.task(f"{task.value} on {model}"))
    record.save(out)
    print_record(f"{task.value}: {model}", record.to_dict())
    say(f"wrote {out}")


@app.command("finetune")
@user_errors
def finetune(
    config: Annotated[Path | None, typer.Option(help="YAML of fine-tuning settings")] = None,
    out: Annotated[Path, typer.Option(
        help="Where the trained parts go (a new folder; `weights/medvlm` replaces the shipped "
             "parts)")] = Path("results/finetune/medvlm"),
    data: Annotated[
        Path | None, typer.Option(help="Your VQA-RAD/SLAKE-format folder (phase 3 and test)")
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="Your HF LLaVA folder instead of medvlm")
    ] = None,
    test_limit: Annotated[int | None, typer.Option(help="Test on the first N questions")] = None,
) -> None:
    """Adapt medvlm (or your LLaVA) to the medical domain in three phases; write OUT."""
    quiet_libraries()
    from mfmaccel.finetune import main_finetune

    with Bars() as bars:
        manifest = main_finetune(config=config, out=out, data=data, base=base,
                                 test_limit=test_limit, progress=bars.task,
                                 log=lambda m: say(f"[dim]{m}[/]"))
    test = manifest["test"]
    title = f"test accuracy on {test['n']} closed questions"
    if test.get("split", "test") != "test":
        title = (f"accuracy on {test['n']} closed questions of the {test['split']} split "
                 "(no test split: trained data, not a held-out test)")
    table = Table("question type", "accuracy", "majority baseline", title=title)
    majority = test.get("majority_baseline", {})
    for qtype, accuracy in test["per_type"].items():
        table.add_row(qtype, f"{accuracy:.3f}", _maybe(majority.get(qtype)))
    table.add_row("all", f"{test['accuracy']:.3f}", _maybe(majority.get("overall")))
    console.print(table)
    say(f"wrote {out}")


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("quantize")
@user_errors
def quantize(
    model: Annotated[str, typer.Option(help="Causal LM, LLaVA or BERT encoder: built-in name, "
                                            "HF folder or .gguf")],
    out: Annotated[Path, typer.Option(help="Folder for the packed model")],
    budget_bytes: Annotated[int | None, typer.Option(help="Whole-model bytes")] = None,
    avg_bits: Annotated[float | None, typer.Option(help="Average bits per parameter")] = None,
    max_ppl_increase: Annotated[
        float | None, typer.Option(help="e.g. 0.03: perplexity within +3%")
    ] = None,
    uniform: Annotated[str | None, typer.Option(help="No search: e.g. int4-g128")] = None,
    specs: Annotated[str, typer.Option(help="Bit-widths the search may use")] = ",".join(
        ("int3-g128", "int4-g128", "int6-g128")),
    method: Annotated[str, typer.Option(help="gptq or rtn")] = "gptq",
    calib_tokens: Annotated[int, typer.Option(help="Calibration tokens")] = 2048,
    activations: Annotated[
        str | None, typer.Option(help="W8A8 with --uniform int8-c-sym: int8 inputs per 'token' "
                                      "(dynamic) or per 'tensor' (calibrated)")
    ] = None,
    smooth: Annotated[
        float | None, typer.Option(help="SmoothQuant alpha (e.g. 0.5): move activation "
                                        "outliers into the weights first (Llama family)")
    ] = None,
) -> None:
    """Quantize to a budget with hierarchy-aware mixed precision; save packed to OUT."""
    quiet_libraries()
    from mfmaccel.compress.search import (
        Budget,
        check_quantizable,
        compress_to_budget,
        uniform_to_spec,
    )
    from mfmaccel.fileio import atomic_write_json, check_replaceable
    from mfmaccel.models import load_model
    from mfmaccel.models.loader import model_kind, save_model
    from mfmaccel.runtime.plan import describe_method

    check_replaceable(out)  # refuse a user's folder before minutes of compute, not after
    targets = [budget_bytes, avg_bits, max_ppl_increase]
    if uniform is not None and any(t is not None for t in targets):
        raise UserInputError("--uniform takes no budget; give one or the other")
    if (activations is not None or smooth is not None) and uniform is None:
        raise UserInputError("--activations and --smooth need --uniform (e.g. int8-c-sym)")
    budget = None if uniform is not None else Budget(bytes=budget_bytes, avg_bits=avg_bits,
                                                     max_ppl_increase=max_ppl_increase)
    check_quantizable(model, model_kind(model), budget)
    loaded = load_model(model)
    plan = (f"every part to {uniform}" if uniform is not None else
            "after measuring the sensitivity and searching the bit-widths,")
    say(f"[dim]quantizing {plan} with {describe_method(method)}[/]")
    with Bars() as bars:
        if uniform is not None:
            uniform_to_spec(loaded, uniform, method, calib_tokens, activations, smooth,
                            progress=bars.task(f"{method} {uniform}"))
            record = None
        else:
            loaded, record = compress_to_budget(
                loaded, budget, [s.strip() for s in specs.split(",")], method, calib_tokens,
                reload=lambda: load_model(model), progress=bars.task("sensitivity"),
                apply_progress=bars.task(method), log=lambda m: say(f"[dim]{m}[/]"))
    save_model(loaded, out)
    if record is not None:
        atomic_write_json(out / "compression.json", record.to_dict())
        print_record(f"quantized {model}", {"bytes": record.bytes,
                                             "fraction of FP16": record.fraction_of_fp16,
                                             "bit-widths": str(record.choice_histogram)})
    say(f"wrote {out}")


@app.command("prune")
@user_errors
def prune(
    model: Annotated[str, typer.Option(help="Causal LM or LLaVA VLM: name, HF folder, .gguf")],
    out: Annotated[Path, typer.Option(help="Folder for the pruned model")],
    blocks: Annotated[int, typer.Option(help="Transformer blocks to remove")] = 0,
    mlp_fraction: Annotated[float, typer.Option(help="Fraction of MLP channels")] = 0.0,
    kv_groups: Annotated[int, typer.Option(help="Key/value groups per block")] = 0,
    calib_tokens: Annotated[int, typer.Option(help="Calibration tokens")] = 2048,
    recover_steps: Annotated[
        int, typer.Option(help="LoRA steps distilling the unpruned model back in (0: none)")
    ] = 0,
    recover_tokens: Annotated[int, typer.Option(help="Text tokens for recovery")] = 32768,
) -> None:
    """Remove blocks, MLP channels and key/value groups; save a smaller HF model to OUT."""
    quiet_libraries()
    from mfmaccel.compress.recover import prune_and_recover
    from mfmaccel.fileio import atomic_write_json, check_replaceable
    from mfmaccel.models import load_model
    from mfmaccel.models.loader import save_model

    check_replaceable(out)
    loaded = load_model(model)
    with Bars() as bars:
        loaded, report = prune_and_recover(
            loaded, calib_tokens, blocks, mlp_fraction, kv_groups, recover_steps,
            recover_tokens, progress=bars.task("recovery") if recover_steps else None,
            prune_progress=bars.task("pruning"))
    save_model(loaded, out)
    atomic_write_json(out / "pruning.json", report.to_dict())
    before, after = report.params
    print_record(f"pruned {model}", {"removed blocks": str(report.removed_blocks),
                                     "parameters": f"{before:,} -> {after:,}"})
    say(f"wrote {out}")


@app.command("run")
@user_errors
def run(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML or built-in name")] = "medical",
    resume: Annotated[bool, typer.Option(help="Skip stages an earlier run completed")] = False,
    fresh: Annotated[bool, typer.Option(
        help="Replace an earlier run of this recipe (only a folder mfmaccel run wrote)")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go")] = Path("runs"),
) -> None:
    """Run a recipe's stages in order, measuring before and after each; write runs/<name>/."""
    quiet_libraries()
    from mfmaccel.pipeline.recipe import load_recipe
    from mfmaccel.pipeline.runner import run_recipe

    loaded = load_recipe(recipe)
    try:
        with Bars() as bars:
            state = run_recipe(loaded, runs_dir=runs_dir, resume=resume, fresh=fresh,
                               progress=bars.task, log=lambda m: say(f"[dim]{m}[/]"))
    except KeyboardInterrupt:
        where = "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"
        errors.print(f"interrupted; continue with: mfmaccel run {recipe}{where} --resume",
                     soft_wrap=True, highlight=False)
        raise typer.Exit(code=130) from None
    from mfmaccel.report import console_summary, write_report

    console_summary(state, console)
    say(f"report: {write_report(runs_dir / loaded.name)}")


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
) -> None:
    """Print the completion of PROMPT alone on stdout (statistics go to stderr)."""
    quiet_libraries()
    from mfmaccel.decode.generate import generate_text
    from mfmaccel.models import load_model
    from mfmaccel.runtime.sampling import Sampling

    sampling = Sampling(temperature, top_k, top_p, seed)
    loaded = load_model(model)
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
             "problems) or medvqa (confidence: answer margin; calibrated on the val split)")
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
    from mfmaccel.fileio import check_replaceable_file

    if len(models) < 2:
        raise UserInputError("a cascade needs at least two --model options, smallest first")
    check_replaceable_file(out)
    if task == CascadeTask.medvqa:
        if evals or samples != 1 or temperature or test_lines:
            raise UserInputError("--eval, --samples, --temperature and --test-lines are for "
                                 "--task humaneval")
        report = _vqa_cascade(models, data, limit)
    else:
        report = _code_cascade(models, data, evals, limit, samples, temperature, test_lines)
    report.save(out)
    point = report.held_out
    print_record(f"cascade (held out; theta from {report.calibrated_on})", {
        "theta": point.theta, "pass@1": point.pass_rate, "alone": str(report.alone),
        "cost vs largest": point.cost_fraction, "answered by": str(point.answered_by)})
    from mfmaccel.decode.cascade import EXTRACTED

    lower = [model for model, how in report.tokens_counted.items() if how == EXTRACTED]
    if lower:
        say(f"[yellow]note:[/] FLOPs of {', '.join(lower)} count {EXTRACTED}")
    say(f"wrote {out}")


def _code_cascade(models: list[str], data: Path | None, evals: list[Path] | None,
                  limit: int | None, samples: int, temperature: float, test_lines: int):
    """HumanEval: each model's answers from its eval record, or generated here."""
    import json

    from mfmaccel.decode.cascade import answers_from_record, calibrated_cascade
    from mfmaccel.evaluate.run import TaskOptions, load_task_data, measure_task
    from mfmaccel.models import load_model

    options = TaskOptions(samples=samples, temperature=temperature)
    if test_lines < 0:
        raise UserInputError(f"--test-lines must be 0 or more, got {test_lines}")
    if evals and len(evals) != len(models):
        raise UserInputError("give one --eval record per --model, in the same order")
    problems = load_task_data("humaneval", data, limit, seed=0)
    chain = []
    with Bars() as bars:
        for index, name in enumerate(models):
            loaded = load_model(name)
            if evals:
                if not evals[index].is_file():
                    raise UserInputError(f"{evals[index]} does not exist; check --eval")
                record = json.loads(evals[index].read_text())
            else:
                record = measure_task(loaded, problems, options,
                                      progress=bars.task(f"humaneval on {name}"))
                record = record.to_dict()
            chain.append(answers_from_record(loaded, problems.items, record, test_lines,
                                             last=index == len(models) - 1,
                                             progress=bars.task(f"self-tests of {name}")))
    return calibrated_cascade(chain)


def _vqa_cascade(models: list[str], data: Path | None, limit: int | None):
    """Closed-question VQA: every model answers the val split (to calibrate theta) and the
    test split (to report on)."""
    from mfmaccel.decode.cascade import calibrated_cascade, vqa_answers
    from mfmaccel.evaluate.run import vqa_samples
    from mfmaccel.models import load_model

    test = vqa_samples(data, "test", limit)
    try:
        val = vqa_samples(data, "val", limit)
    except UserInputError as error:
        raise UserInputError(f"{error}; the VQA cascade calibrates theta on the val split, so "
                             "give --data a folder with val questions") from None
    calibration, reported = [], []
    with Bars() as bars:
        for name in models:
            loaded = load_model(name)
            calibration.append(vqa_answers(loaded, val, bars.task(f"val on {name}")))
            reported.append(vqa_answers(loaded, test, bars.task(f"test on {name}")))
    return calibrated_cascade(reported, calibration)


hw_app = typer.Typer(help="Integer-only execution and the accelerator (layer 4).",
                     no_args_is_help=True)
app.add_typer(hw_app, name="hw")


@hw_app.command("intexec")
@user_errors
def hw_intexec(
    model: Annotated[str, typer.Option(
        help="A BERT-family encoder (minilm-l6), a Llama-family decoder (smollm2-135m) or "
             "medvlm (its vision tower runs integer-only)")],
    sentences: Annotated[int, typer.Option(help="Encoder: test paragraphs to compare on")] = 128,
    calibration: Annotated[int, typer.Option(
        help="Encoder: train paragraphs to calibrate on; VLM: train images")] = 64,
    questions: Annotated[int, typer.Option(
        help="VLM: medical VQA test questions (type-balanced subset; 0: all)")] = 0,
    tokens: Annotated[int, typer.Option(help="Decoder: test tokens to score")] = 2048,
    calibration_tokens: Annotated[int, typer.Option(help="Decoder: train tokens")] = 2048,
    context: Annotated[int, typer.Option(help="Decoder: window length")] = 256,
    per_token: Annotated[bool, typer.Option(help="Per-token power-of-two scales for the GEMM "
                                            "inputs (else static per-tensor)")] = True,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Run MODEL integer-only and report how close it stays to float."""
    quiet_libraries()
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.hw.intexec.quality import (
        decoder_agreement,
        encoder_agreement,
        vision_agreement,
    )
    from mfmaccel.models import CAUSAL_LM, VLM, load_model
    from mfmaccel.models.loader import model_kind

    out = out or Path("results") / f"{Path(model).name}-intexec.json"
    check_replaceable_file(out)  # refuse a user's file before minutes of compute
    kind = model_kind(model)
    loaded = load_model(model)
    with Bars() as bars:
        steps = {"calibration_progress": bars.task("calibration"),
                 "progress": bars.task("scoring")}
        if kind == CAUSAL_LM:
            record = decoder_agreement(loaded, tokens, calibration_tokens, context, per_token,
                                       **steps)
        elif kind == VLM:
            record = vision_agreement(loaded, questions, calibration, per_token, **steps)
        else:
            record = encoder_agreement(loaded, sentences, calibration, per_token, **steps)
    record.save(out)
    print_record(f"integer-only {model} vs float", record.to_dict())
    say(f"wrote {out}")


@hw_app.command("rtl")
@user_errors
def hw_rtl(
    out: Annotated[Path, typer.Option(help="Folder for the Verilog and its test runner")],
    rows: Annotated[int, typer.Option(help="MAC array rows")] = 8,
    cols: Annotated[int, typer.Option(help="MAC array columns")] = 8,
    synth: Annotated[bool, typer.Option(help="Also count cells with yosys (area proxy)")] = False,
) -> None:
    """Write the accelerator's Verilog units (and run_tests.py, their cocotb testbenches)."""
    from mfmaccel.hw.rtl.config import RtlConfig
    from mfmaccel.hw.rtl.verify import synthesis_cells, write_rtl

    sources = write_rtl(out, RtlConfig(rows=rows, cols=cols))
    table = Table("unit", "file", *(["yosys cells"] if synth else []))
    for source in sources:
        table.add_row(source.stem, str(source), *([str(synthesis_cells(source))] if synth else []))
    console.print(table)
    say(f"wrote {out}; check bit-exactness with: python {out / 'run_tests.py'}")


def _override(arch, **values):
    """The preset with the options the user gave (None: keep the preset's)."""
    from dataclasses import replace

    given = {name: value for name, value in values.items() if value is not None}
    return replace(arch, **given) if given else arch


@hw_app.command("simulate")
@user_errors
def hw_simulate(
    model: Annotated[str, typer.Option(help="roberta-base or vit-base (configs only), a "
                                            "built-in model, tiny-<arch>, an HF folder (a "
                                            "config.json alone will do) or a .gguf file")],
    arch: Annotated[str, typer.Option(help="Preset: swifttron, edge, large")] = "edge",
    seq_len: Annotated[int, typer.Option(help="Text tokens per forward pass")] = 128,
    image_size: Annotated[int | None, typer.Option(help="Vision encoders: pixels per side")
                          ] = None,
    rows: Annotated[int | None, typer.Option(help="Override: MAC array rows")] = None,
    cols: Annotated[int | None, typer.Option(help="Override: MAC array columns")] = None,
    clock_mhz: Annotated[float | None, typer.Option(help="Override: clock")] = None,
    bandwidth_gbs: Annotated[float | None, typer.Option(help="Override: off-chip GB/s")] = None,
    attention: Annotated[str | None, typer.Option(help="Override: tiled or full")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Predict cycles, energy and area of MODEL's forward pass on an accelerator, per operation,
    with a roofline plot next to the JSON."""
    quiet_libraries()
    from mfmaccel.fileio import atomic_write_bytes
    from mfmaccel.hw.arch import get_arch
    from mfmaccel.hw.simulate import simulate
    from mfmaccel.hw.trace import workload_for_spec
    from mfmaccel.report.hwplots import roofline

    target = _override(get_arch(arch), rows=rows, cols=cols, clock_mhz=clock_mhz,
                       bandwidth_gbs=bandwidth_gbs, attention=attention)
    result = simulate(workload_for_spec(model, seq_len, image_size), target)
    out = out or Path("results") / f"{Path(model).name}-{arch}-L{seq_len}-simulate.json"
    result.save(out)
    png = roofline(result.to_dict())
    if png:
        atomic_write_bytes(out.with_suffix(".png"), png)
    table = Table("operation", "count", "GMACs", "cycles", "bound", "util", "off-chip MB",
                  "energy uJ", "flow", title=f"{model} ({result.workload}) on {target.name}")
    for op in result.ops:
        table.add_row(op.name, str(op.count), f"{op.macs / 1e9:.3f}", f"{op.cycles:,}", op.bound,
                      f"{op.utilisation:.0%}" if op.macs else "", f"{op.dram_bytes / 1e6:.2f}",
                      f"{sum(op.energy_pj.values()) / 1e6:.1f}", op.mapping.split(":")[0])
    console.print(table)
    say(f"latency {result.latency_ms:.3f} ms, energy {result.energy_mj:.3f} mJ, on-chip power "
        f"{result.power_mw:.1f} mW, area {result.area_mm2:.2f} mm² ({target.tech.name}); matrix "
        f"multiplication {result.matmul_area_share:.0%} of area, "
        f"{result.matmul_power_share:.0%} of on-chip power")
    say(f"wrote {out}")


def _values(text: str | None, cast=float) -> tuple | None:
    """'8,16,32' -> (8, 16, 32)."""
    if text is None:
        return None
    try:
        return tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserInputError(f"'{text}' is not a comma-separated list of numbers, e.g. "
                             f"8,16,32") from None


@hw_app.command("dse")
@user_errors
def hw_dse(
    model: Annotated[str, typer.Option(help="As for `hw simulate`")],
    seq_len: Annotated[int, typer.Option(help="Text tokens per forward pass")] = 128,
    image_size: Annotated[int | None, typer.Option(help="Vision encoders: pixels per side")
                          ] = None,
    arch: Annotated[str, typer.Option(help="Preset whose technology and units are kept (as "
                                           "for `hw simulate`)")] = "edge",
    rows: Annotated[str | None, typer.Option(help="Array rows to try, e.g. 8,16,32")] = None,
    cols: Annotated[str | None, typer.Option(help="Array columns to try")] = None,
    a_buffer_kib: Annotated[str | None, typer.Option(help="A buffer sizes (KiB)")] = None,
    b_buffer_kib: Annotated[str | None, typer.Option(help="B buffer sizes (KiB)")] = None,
    out_buffer_kib: Annotated[str | None, typer.Option(help="Output buffer sizes (KiB)")
                              ] = None,
    bandwidth_gbs: Annotated[str | None, typer.Option(help="Off-chip GB/s to try")] = None,
    clock_mhz: Annotated[str | None, typer.Option(help="Clocks to try (MHz)")] = None,
    vector_lanes: Annotated[str | None, typer.Option(help="Non-linear unit lanes")] = None,
    weight_bits: Annotated[str | None, typer.Option(help="Weight bit-widths, e.g. 4,8")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Keep designs at most this")
                              ] = None,
    max_energy_mj: Annotated[float | None, typer.Option()] = None,
    max_area_mm2: Annotated[float | None, typer.Option()] = None,
    max_power_mw: Annotated[float | None, typer.Option()] = None,
    workers: Annotated[int, typer.Option(help="Processes")] = 2,
    chunk: Annotated[str | None, typer.Option(help="Run only chunk I of N, e.g. 3/10")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder")] = None,
) -> None:
    """Sweep accelerator designs for MODEL; write the Pareto front of latency, energy and area
    (front.json, front.png) and every design point (points.json)."""
    quiet_libraries()
    from mfmaccel.hw.dse import Constraints, DesignSpace, explore
    from mfmaccel.hw.trace import workload_for_spec

    given = {"rows": _values(rows, int), "cols": _values(cols, int),
             "a_buffer_kib": _values(a_buffer_kib), "b_buffer_kib": _values(b_buffer_kib),
             "out_buffer_kib": _values(out_buffer_kib), "bandwidth_gbs": _values(bandwidth_gbs),
             "clock_mhz": _values(clock_mhz), "vector_lanes": _values(vector_lanes, int),
             "weight_bits": _values(weight_bits, int)}
    space = DesignSpace(base=arch, **{k: v for k, v in given.items() if v is not None})
    if workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}")
    part = _chunk(chunk)
    workload = workload_for_spec(model, seq_len, image_size)
    with Bars() as bars:
        result = explore(workload, space, workers, part,
                         Constraints(max_latency_ms, max_energy_mj, max_area_mm2, max_power_mw),
                         progress=bars.task(f"designs of {model}"))
    suffix = f"-chunk{part[0]}of{part[1]}" if part else ""
    out = out or Path("results") / f"dse-{Path(model).name}-L{seq_len}{suffix}"
    _write_exploration(result, out)


@hw_app.command("dse-merge")
@user_errors
def hw_dse_merge(
    folders: Annotated[list[Path], typer.Argument(help="The --out folders of the chunks")],
    out: Annotated[Path, typer.Option(help="Folder for the merged front")],
) -> None:
    """Merge the chunks of one sweep (`hw dse --chunk I/N`) into one Pareto front."""
    from mfmaccel.hw.dse import load_exploration, merge

    _write_exploration(merge([load_exploration(folder) for folder in folders]), out)


def _write_exploration(result, out: Path) -> None:
    """front.json, points.json and front.png in `out`, and the front as a table."""
    from mfmaccel.fileio import atomic_write_bytes, atomic_write_json
    from mfmaccel.hw.dse import describe
    from mfmaccel.report.hwplots import dse_front

    record = result.to_dict()
    atomic_write_json(out / "points.json", record.pop("points"))
    atomic_write_json(out / "front.json", record)
    png = dse_front(result.to_dict())
    if png:
        atomic_write_bytes(out / "front.png", png)
    table = Table("latency ms", "energy mJ", "area mm²", "power mW", "design",
                  title=f"Pareto front: {len(result.front)} of {result.evaluated} designs "
                        f"({result.points_per_minute:,.0f} per minute)")
    for point in result.front[:15]:
        table.add_row(f"{point.latency_ms:.3f}", f"{point.energy_mj:.3f}",
                      f"{point.area_mm2:.2f}", f"{point.power_mw:.0f}",
                      describe(point.params))
    console.print(table)
    say(f"wrote {out}")


def _chunk(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserInputError(f"--chunk '{text}': use I/N, e.g. 0/4 for the first of four") \
            from None
    return index, count


@app.command("report")
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/quick")]) -> None:
    """Write RUN_DIR/report.html and print the stage-by-stage table."""
    from mfmaccel.report import console_summary, load_run, write_report

    path = write_report(run_dir)
    console_summary(load_run(run_dir), console)
    say(f"report: {path}")


def main() -> None:
    app()
