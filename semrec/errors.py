"""The one exception type users see: a one-line message, exit code 2, no traceback."""


class SemrecError(Exception):
    """A problem with the user's input or environment, reported as one line by the CLI."""
