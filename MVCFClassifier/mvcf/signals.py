"""SIGTERM and SIGHUP handled like SIGINT: the work is cancelled, temporary files are removed, worker processes
are ended, and the command exits 130 with one line.

Without this a `kill` (or the Slicer runner's Cancel, or a closed terminal) ended the process at once: no
cleanup, status 143, no message, and the workers of `synth --workers N` kept running as orphans. Raising
KeyboardInterrupt from the handler reuses every cleanup path Ctrl-C already has (atomic writes delete their
temporary files in `finally`, training keeps its checkpoints for --resume). Workers ignore SIGINT (the
parent decides) and die with their parent even when it is killed with SIGKILL (Linux PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
from typing import Iterator, Optional

#: The signals that cancel a command (SIGHUP: the terminal was closed).
CANCEL_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when a cancel signal arrives; `signal_name` says which."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


def end_children(timeout_s: float = 5.0) -> int:
    """Terminate (then kill) this process's multiprocessing children, e.g. a ProcessPoolExecutor's workers;
    returns how many there were."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout_s)
        if child.is_alive():
            child.kill()
            child.join(1.0)
    return len(children)


#: Set by outputs_final(): the command's outputs are written and final, so a cancel has nothing left to undo.
_final = False


def outputs_final() -> None:
    """Called by a command once its outputs are written and final (only its result is left to print): a cancel
    signal from here on is ignored, so the command ends as it finished (exit 0, result printed) instead of
    saying "interrupted" with every new file in place; a cancel swallowed earlier (raise_swallowed) is dropped
    for the same reason. Only while `install`'s handlers are in place."""
    global _final
    _final = True
    _swallowed.clear()


def _on_signal(signum: int, _frame) -> None:
    if _final:
        return
    for sig in CANCEL_SIGNALS:  # a second signal while cleaning up must not interrupt the cleanup
        signal.signal(sig, signal.SIG_IGN)
    # The worker pool's own helper threads see their workers vanish once end_children() has ended them and
    # may die with an exception; the run is being cancelled, so that is expected, not a second error to print.
    threading.excepthook = _quiet_after_cancel
    end_children()
    global _received
    _received = Interrupted(signum)
    raise _received


def _quiet_after_cancel(args) -> None:
    """threading.excepthook once a cancel signal arrived: helper threads end without a traceback."""


#: A cancel whose Interrupted Python swallowed: raised where no exception can leave (a weakref callback or
#: __del__ run by the garbage collector), it is only printed as "Exception ignored in ..." and the run goes on.
_swallowed: list[Interrupted] = []


def _unraisable(args) -> None:
    """sys.unraisablehook while a command runs: a swallowed cancel is kept for raise_swallowed, not printed."""
    if isinstance(args.exc_value, Interrupted):
        _swallowed.append(args.exc_value)
        return
    sys.__unraisablehook__(args)


def raise_swallowed() -> None:
    """Raise a cancel the garbage collector swallowed (see _swallowed), once, at a place that can raise: the
    reporters call it on every progress, metrics and log event and fileio at the start of each write of a
    run's outputs, so the cancel takes effect at the run's next step instead of being lost (the handler ignores further signals while it cleans up, so a second Cancel
    would not help either)."""
    if _swallowed:
        exc = _swallowed[0]
        _swallowed.clear()
        raise exc


#: The cancel this command received (install() clears it): what an error on the cancel's way out really is.
_received: Optional[Interrupted] = None


@contextlib.contextmanager
def cancel_wins() -> Iterator[None]:
    """Raise the received cancel in place of an error that leaves the block after it arrived: a C extension
    catches the KeyboardInterrupt raised in its code and raises its own error (onnxruntime's import:
    "ImportError: initialization failed", a traceback and exit 1 where a cancel exits 130 with one line)."""
    try:
        yield
    except Exception as exc:
        if _received is not None:
            raise _received from exc
        raise


def install() -> dict:
    """Route SIGINT, SIGTERM and SIGHUP to one handler (main thread only); returns the handlers it replaced,
    for `restore`."""
    global _final, _received
    if threading.current_thread() is not threading.main_thread():
        return {}
    _final, _received = False, None
    _swallowed.clear()
    previous: dict = {sig: signal.signal(sig, _on_signal) for sig in CANCEL_SIGNALS}
    previous["unraisablehook"] = sys.unraisablehook
    sys.unraisablehook = _unraisable
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers `install` replaced (main() also runs in-process: tests, batch scripts)."""
    global _final, _received
    _final, _received = False, None
    for sig, handler in previous.items():
        if sig == "unraisablehook":
            sys.unraisablehook = handler
        else:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    _swallowed.clear()


def worker_init() -> None:
    """Initializer of worker processes: leave SIGINT to the parent and die when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in CANCEL_SIGNALS[1:]:
        signal.signal(sig, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def describe(exc: BaseException) -> str:
    """The one line for an interrupted command."""
    name: Optional[str] = getattr(exc, "signal_name", None)
    return f"interrupted ({name})" if name and name != "SIGINT" else "interrupted"
