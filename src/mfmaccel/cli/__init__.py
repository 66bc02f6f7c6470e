"""The `mfmaccel` command: each subcommand is a thin module of typer options that turns them
into one call into its layer's API, then prints the result (`root` holds what they share).

Importing a command module registers its subcommands on `root.app`; `root` comes first, as it
configures the threads before any command imports torch.
"""

# isort: off
# The order of the command modules is the order `mfmaccel --help` lists their commands in.
from mfmaccel.cli.root import app, main
from mfmaccel.cli import models, evaluate, finetune, compress, pipeline, decode, execute  # noqa: F401
from mfmaccel.cli import report, hw, spiking  # noqa: F401

# isort: on

__all__ = ["app", "main"]
