"""JSON handed in by a user or a client (a model card, a locations file, a worker request, a reader's answers).

Python's `json` raises five kinds of error on hostile text: a syntax error, a RecursionError for deep nesting,
a ValueError for an integer of thousands of digits, a UnicodeDecodeError for bytes, and it reads `NaN` and
`Infinity`, which JSON does not allow. `loads` turns each into one reason, so every reader of such text says
the same thing for the same fault.
"""
from __future__ import annotations

import json
from typing import Any, Union


class JSONInputError(ValueError):
    """Why a text is not JSON mvcf reads: `reason` is a phrase to follow "is not valid JSON: "."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _no_constant(name: str) -> Any:
    raise JSONInputError(f"it holds {name}, which is not a number JSON allows")


def _no_repeated_key(pairs: list) -> dict:
    """An object naming one key twice: json takes the last in silence, so which value is meant is unclear."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise JSONInputError(f"the key {key!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def loads(text: Union[str, bytes]) -> Any:
    """The JSON value of `text`, or JSONInputError with one line saying why not."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_repeated_key)
    except JSONInputError:
        raise
    except UnicodeDecodeError:
        raise JSONInputError("it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise JSONInputError("it is nested too deeply") from None
    except ValueError as exc:   # an integer of more digits than Python converts (int_max_str_digits)
        raise JSONInputError(str(exc).split(";")[0].replace("Exceeds", "it exceeds", 1)) from None
