"""`mfmaccel eval`: one task measured on one model (`evaluate.run.run_evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.options import Scheduler, Workers
from mfmaccel.cli.root import Bars, app, print_record, quiet_libraries, say, user_errors
from mfmaccel.evaluate.choices import Task, VqaMode


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
    mode: Annotated[VqaMode, typer.Option(help="medvqa: rank or generate")] = VqaMode.rank,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="humaneval (384) / speed (64): tokens to generate")
    ] = None,
    seed: Annotated[int, typer.Option(help="Subset, tiny-model and sampling seed")] = 0,
    samples: Annotated[int, typer.Option(help="humaneval: completions per problem")] = 1,
    temperature: Annotated[
        float, typer.Option(help="humaneval: sampling temperature (0: greedy)")] = 0.0,
    top_p: Annotated[float, typer.Option(help="humaneval: nucleus sampling mass")] = 0.95,
    knobs: Annotated[Path | None, typer.Option(
        help="Execution knobs to apply: a `mfmaccel cooptimize` output (its chosen point)")
    ] = None,
    fuse: Annotated[bool, typer.Option(
        help="Fuse the model's blocks first (q/k/v, gate/up, norms; docs/execute.md)")] = False,
    workers: Workers = 1,
    scheduler: Scheduler = None,
) -> None:
    """Measure a model on one task; print a table and write JSON. HumanEval's generation may
    run on worker processes (--workers, --scheduler: docs/sweeps.md), each loading MODEL."""
    quiet_libraries()
    from mfmaccel.evaluate.run import TaskOptions, run_evaluation
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.parallel import Executor

    executor = Executor(workers=workers, scheduler=scheduler)

    out = out or Path("results") / f"{Path(model).name}-{task.value}.json"
    check_replaceable_file(out)  # refuse a user's file before the evaluation, not after
    from mfmaccel.execute.settings import adapter

    adapt = adapter(knobs=knobs, fuse=fuse)
    with Bars() as bars:
        options = TaskOptions(context=context, stride=stride, max_tokens=max_tokens,
                              mode=mode.value, max_new_tokens=max_new_tokens, samples=samples,
                              temperature=temperature, top_p=top_p, seed=seed)
        record = run_evaluation(model, task.value, data=data, limit=limit, options=options,
                                seed=seed, progress=bars.task(f"{task.value} on {model}"),
                                adapt=adapt, executor=executor)
    record.save(out)
    print_record(f"{task.value}: {model}", record.to_dict())
    say(f"wrote {out}")
