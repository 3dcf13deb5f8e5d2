"""The single error type for problems a user can fix (bad file, bad point, bad manifest...).

The CLI turns an MVCFError into a one-line `error: ...` on stderr and exit code 2; any other exception is
a bug (exit code 1, traceback kept).
"""


class MVCFError(Exception):
    """A user-facing problem with the input; the message is one line that says what to fix."""


class Cancelled(MVCFError):
    """Long work stopped because the caller asked for it."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)
