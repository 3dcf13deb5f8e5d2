"""Progress reporting and cancellation shared by predict, train and study.

Long work takes `on_progress(done, total, message)` and `should_cancel()` callables. On the CLI these become
a tqdm bar on a terminal and a plain `progress: ...` line per 15 s in a log (a Slurm or nohup log would
otherwise hold the bar's carriage-return redraws, with the final `error:` line glued to them); in a child
process started by the Slicer modules (`mvcf --progress jsonl ...`) every event is one JSON line on stdout:

    {"event": "progress", "done": 3, "total": 10, "message": "epoch 3/10"}
    {"event": "metrics", ...any numbers, e.g. "epoch", "train_loss", "val_auc"}
    {"event": "log", "level": "warning", "message": "..."}
    {"event": "result", ...the command's JSON result}
    {"event": "error", "message": "...one line..."}

and nothing else: every command's result goes through `emit_result`, so neither `--json`'s pretty JSON nor
the text for people ever shares stdout with the events. Every progress, metrics and log event is also where a
cancel that the garbage collector swallowed takes effect (mvcf.signals.raise_swallowed).
"""
from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator, Optional, Protocol

from mvcf.errors import Cancelled
from mvcf.signals import raise_swallowed

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]


class Reporter(Protocol):
    """Where a command's events go. `result` and `error` matter to a machine reader (the JSON-lines child
    protocol); a reporter for people ignores them, since the command prints its result itself. `result`
    returns True when the reporter delivered the result (so a command need not print it again)."""

    def progress(self, done: int, total: int, message: str = "") -> None: ...
    def metrics(self, **values: Any) -> None: ...
    def log(self, message: str, level: str = "info") -> None: ...
    def result(self, payload: dict) -> bool: ...
    def error(self, message: str) -> None: ...
    def close(self) -> None: ...


class _ForPeople:
    """result/error of the reporters for people: the command has printed both already."""

    def result(self, payload: dict) -> bool:
        return False

    def error(self, message: str) -> None:
        pass


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    return str(value)


def standard_json(value: Any) -> Any:
    """`value` with NaN and infinities as null (and numpy numbers as Python ones): what every JSON mvcf
    writes holds, since standard parsers, mvcf's own among them, refuse NaN and Infinity."""
    if isinstance(value, dict):
        return {str(k): standard_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist) and getattr(value, "ndim", 0) > 0:
        return standard_json(value.tolist())   # an array
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()   # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps of standard_json(obj): numpy scalars and arrays (anything with item()/tolist()) accepted,
    NaN and infinities written as null."""
    return json.dumps(standard_json(obj), default=_jsonable, allow_nan=False, **kwargs)


class JsonLinesReporter:
    """Writes one JSON object per event; the protocol read by MVCFClassifierLib.process.ChildProcess."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = dumps({"event": event, **fields})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def progress(self, done: int, total: int, message: str = "") -> None:
        raise_swallowed()
        self.emit("progress", done=int(done), total=int(total), message=message)

    def metrics(self, **values: Any) -> None:
        raise_swallowed()
        self.emit("metrics", **values)

    def log(self, message: str, level: str = "info") -> None:
        raise_swallowed()
        self.emit("log", level=level, message=message)

    def result(self, payload: dict) -> bool:
        self.emit("result", **payload)
        return True

    def error(self, message: str) -> None:
        self.emit("error", message=message)

    def close(self) -> None:
        pass


#: seconds of work before the first `progress:` line in a log, and between two of them: a quick run (a refusal
#: included) writes none, a long one a line per interval
LINE_INTERVAL_S = 15.0


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class TqdmReporter(_ForPeople):
    """A tqdm bar on stderr for interactive CLI use; metrics and logs go to stderr as text. When stderr is
    not a terminal, a `progress: done/total message` line once every LINE_INTERVAL_S seconds of work, so
    every line of the log starts with what it is."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._bar = None
        self._terminal = _is_terminal(self._stream)
        self._last_line = time.monotonic()

    def progress(self, done: int, total: int, message: str = "") -> None:
        raise_swallowed()
        if not self._terminal:
            self._progress_line(done, total, message)
            return
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, file=self._stream, leave=False, dynamic_ncols=True)
        self._bar.n = done
        self._bar.set_description_str(message[:60], refresh=False)
        self._bar.refresh()

    def _progress_line(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if now - self._last_line >= LINE_INTERVAL_S:
            text = " ".join(message.split())[:200]
            print(f"progress: {done}/{total} {text}".rstrip(), file=self._stream, flush=True)
            self._last_line = now

    def metrics(self, **values: Any) -> None:
        raise_swallowed()
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self._write(text)

    def log(self, message: str, level: str = "info") -> None:
        raise_swallowed()
        self._write(message if level == "info" else f"{level}: {message}")

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            print(text, file=self._stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class NullReporter(_ForPeople):
    """`--progress none`: no bar, no metrics, no info lines; warnings and errors are still `level: ...` lines
    on stderr (dropping them would hide what the user must know, e.g. a view padded with air)."""

    def progress(self, done: int, total: int, message: str = "") -> None:
        raise_swallowed()

    def metrics(self, **values: Any) -> None:
        raise_swallowed()

    def log(self, message: str, level: str = "info") -> None:
        raise_swallowed()
        if level != "info":
            print(f"{level}: {message}", file=sys.stderr)

    def close(self) -> None:
        pass


def make_reporter(kind: str) -> Reporter:
    """`tqdm` (the default: a bar on a terminal, `progress:` lines in a log), `jsonl` (child-process
    protocol) or `none`."""
    if kind == "jsonl":
        return JsonLinesReporter()
    if kind == "none":
        return NullReporter()
    return TqdmReporter()


class ReporterLogHandler(logging.Handler):
    """The core's logged warnings (`logging.getLogger("mvcf...")`) as the command's own: a `log` event in
    the JSON-lines protocol (or of one worker request: anything with the Reporter's `log`), else a
    `warning: ...` line on stderr (above a tqdm bar, not through it). Without it Python's last-resort
    handler prints them bare, and `--progress none` would not change that."""

    def __init__(self, reporter: Any) -> None:
        super().__init__(logging.WARNING)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.log(record.getMessage(), record.levelname.lower())
        except Exception:  # a logging failure must never end the command
            self.handleError(record)


def emit_result(reporter: Any, payload: dict, as_json: bool, text: Callable[[], None],
                indent: Optional[int] = 2) -> bool:
    """Say a command's result once, in the form its reader asked for: with `--progress jsonl` only the
    `result` event (stdout is the protocol there, so neither pretty JSON nor text may share it), else the JSON
    on stdout with `--json`, else `text()` for people (after the bar is gone). True when it went as an event."""
    reporter.close()
    if reporter.result(payload):
        return True
    if as_json:
        print(dumps(payload, indent=indent))
    else:
        text()
    sys.stdout.flush()
    return False


@contextmanager
def warnings_to(reporter: Any) -> Iterator[None]:
    """While the block runs, the core's logged warnings go to `reporter` (ReporterLogHandler): a command's
    reporter in mvcf.cli.main, one request's tagged events in the worker."""
    core, handler = logging.getLogger("mvcf"), ReporterLogHandler(reporter)
    core.addHandler(handler)
    try:
        yield
    finally:
        core.removeHandler(handler)


def check_cancel(should_cancel: Optional[CancelCheck]) -> None:
    """Raise Cancelled when the caller asked to stop; call it once per step of long work."""
    if should_cancel is not None and should_cancel():
        raise Cancelled()
