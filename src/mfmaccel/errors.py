"""The one exception type for bad user input.

Every user-facing entry point raises `UserInputError` with a single line that names the problem
and the fix; the CLI prints that line (no traceback) and exits with code 2.
"""


class UserInputError(Exception):
    """Bad input from the user: a missing file, an unknown name, an infeasible setting."""

    exit_code = 2
