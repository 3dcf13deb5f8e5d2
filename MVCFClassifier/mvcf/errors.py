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


def shown(value: object) -> str:
    """`repr` of a value as the user typed it: a NumPy scalar (what pandas and NumPy hand out) as its Python
    value, so an error says `case 5`, not `case np.int64(5)`."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        value = item()
    return repr(value)


def shown_numbers(values: object, digits: int = 4) -> str:
    """A vector for an error line: `(1.5, 1.5, 3)`, each rounded to `digits` decimals."""
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"  # type: ignore[union-attr]


def spelling(name: object) -> str:
    """What two spellings of one name share (blanks collapsed, letter case folded: `Ann `, `ann`): to a reader
    one name, to a program two, so a name given both ways is refused where it is read."""
    return " ".join(str(name).split()).casefold()
