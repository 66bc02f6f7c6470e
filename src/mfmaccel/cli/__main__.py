"""`python -m mfmaccel.cli`: the `mfmaccel` command."""

from mfmaccel.cli import main

main()
