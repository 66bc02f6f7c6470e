"""`mfmaccel run`: a recipe's stages in order (`pipeline.runner.run_recipe`), then its
report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.root import Bars, app, console, errors, quiet_libraries, say, say_dim, user_errors


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
                               progress=bars.task, log=say_dim)
    except KeyboardInterrupt:
        where = "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"
        errors.print(f"interrupted; continue with: mfmaccel run {recipe}{where} --resume",
                     soft_wrap=True, highlight=False)
        raise typer.Exit(code=130) from None
    from mfmaccel.report import console_summary, write_report

    console_summary(state, console)
    say(f"report: {write_report(runs_dir / loaded.name)}")
