"""The one child-run class of both Slicer modules: an `mvcf` command (or any command) in a child process,
its JSON-lines events read without blocking, Cancel of the whole process tree, and a blocking wait.

The modules use it so the GUI stays live (a QTimer calls `poll()`); batch scripts call `wait()`. Pure
Python, no Qt: it is tested with real child processes under pytest.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

#: Windows: the child gets no console window (Slicer's own launchConsoleProcess hides it the same way).
CREATE_NO_WINDOW = 0x08000000
CREATE_NEW_PROCESS_GROUP = 0x00000200

EventHandler = Callable[[dict], None]


def core_path() -> str:
    """The folder that holds the `mvcf` package (put on the child's PYTHONPATH)."""
    return str(Path(__file__).resolve().parent.parent)


def slicer_python(in_slicer: Optional[bool] = None, which: Callable[[str], Optional[str]] = shutil.which,
                  executable: str = sys.executable) -> str:
    """The interpreter for children: PythonSlicer (Slicer's Python with the same packages, no GUI), else
    this interpreter.

    Inside the Slicer application PythonSlicer is on PATH (as for slicer.util's own children); elsewhere it
    may sit beside the interpreter (a Slicer install's bin folder)."""
    if in_slicer is None:
        in_slicer = getattr(sys.modules.get("slicer"), "app", None) is not None
    if in_slicer and which("PythonSlicer"):
        return str(which("PythonSlicer"))
    beside = Path(executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(beside) if beside.is_file() else executable


def mvcf_command(args: Sequence[str], python_executable: Optional[str] = None) -> list[str]:
    """Command line for `python -m mvcf --progress jsonl <args>` (default interpreter: `slicer_python()`)."""
    return [python_executable or slicer_python(), "-m", "mvcf", "--progress", "jsonl", *map(str, args)]


def popen_options(os_name: Optional[str] = None) -> dict:
    """How the child is started so that Cancel can stop its whole tree: its own process group (POSIX: a
    new session), and on Windows no console window."""
    if (os_name or os.name) == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def last_error_line(stderr: str) -> str:
    """The user-facing reason in a child's stderr: its last `error: ...` line, else its last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    return lines[-1] if lines else ""


@dataclass
class RunOutcome:
    """How a finished child ended: status 'succeeded', 'failed' or 'cancelled' (exit code 130 counts as
    cancelled), its exit code, its result payload and a one-line error."""

    status: str
    returncode: int
    result: Optional[dict] = None
    error: str = ""


class ChildRun:
    """One child process speaking the mvcf.progress JSON-lines protocol.

    API (all a caller needs; the warm worker and the batch scripts build on it):
      - `ChildRun(python_executable=..., env=..., cwd=...).start(args)` runs `mvcf --progress jsonl <args>`;
        `ChildRun(command=[...]).start()` runs any command line.
      - `poll()` -> the events (dicts with an "event" key) that arrived since the last call; never blocks.
        A stdout line that is not a protocol event arrives as {"event": "log", "level": "info", ...}.
      - `cancel()` stops the child and everything it started (SIGTERM to its process group, SIGKILL after
        a grace period; taskkill /T on Windows).
      - `wait(on_event, timeout)` blocks until the child has ended, handing each event to `on_event`.
      - `returncode` (None while running), `finished()`, `result` (the payload of its "result" event),
        `error` (its "error" event), `stderr_tail`, `cancelled`, `started_at`, and `outcome()` once finished.
      - With `requests=True` the child's stdin is a pipe and `send(request)` writes one JSON line to it (a
        long-lived worker reading requests); otherwise its stdin is empty.
    Extra environment variables in `env` are added to this process's environment; the checkout's `mvcf`
    is put first on the child's PYTHONPATH.
    """

    def __init__(self, command: Optional[Sequence[str]] = None, env: Optional[dict] = None,
                 cwd: Optional[str] = None, python_executable: Optional[str] = None, requests: bool = False) -> None:
        self.command = list(command) if command is not None else []
        self.python_executable = python_executable
        self.requests = requests
        self._env = {**os.environ, **(env or {})}
        self._env["PYTHONPATH"] = os.pathsep.join(p for p in (core_path(), self._env.get("PYTHONPATH", "")) if p)
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._cwd = cwd
        self._proc: Optional[subprocess.Popen] = None
        self._events: "queue.Queue[dict]" = queue.Queue()
        self._held: list[dict] = []  # taken off the queue by wait_event(), handed out by the next poll()
        self._stderr: deque[str] = deque(maxlen=200)
        self._threads: list[threading.Thread] = []
        self.started_at: Optional[float] = None
        self.cancelled = False
        self.result: Optional[dict] = None
        self.error: Optional[str] = None

    def start(self, args: Optional[Sequence[str]] = None) -> "ChildRun":
        """Start `mvcf <args>` (or the command given at construction); returns self."""
        if args is not None:
            self.command = mvcf_command(args, self.python_executable)
        if not self.command:
            raise ValueError("nothing to run: pass the mvcf arguments to start() or a command to ChildRun()")
        if self._proc is not None:
            raise RuntimeError("this child has already been started")
        stdin = subprocess.PIPE if self.requests else subprocess.DEVNULL
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin,
                                      env=self._env, cwd=self._cwd, text=True, encoding="utf-8", errors="replace",
                                      bufsize=1, **popen_options())
        self.started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def send(self, request: Union[dict, str]) -> None:
        """Write one request line to the child's stdin (a dict as JSON); needs `requests=True`."""
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("this child takes no requests: create it with requests=True and start() it")
        self._proc.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
        self._proc.stdin.flush()

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "event" not in event:
                    raise ValueError
            except ValueError:
                event = {"event": "log", "level": "info", "message": line}
            if event["event"] == "result":
                self.result = {k: v for k, v in event.items() if k != "event"}
            elif event["event"] == "error":
                self.error = str(event.get("message", ""))
            self._events.put(event)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def poll(self) -> list[dict]:
        """Events that arrived since the last call; never blocks."""
        events, self._held = self._held, []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait_event(self, timeout: float) -> None:
        """Block until an event is there for the next poll(), or `timeout` seconds (so a blocking wait
        wakes when the answer arrives, not on the next tick of a sleep)."""
        if self._held or self.finished():
            return
        try:
            self._held.append(self._events.get(timeout=timeout))
        except queue.Empty:
            pass

    @property
    def pid(self) -> Optional[int]:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self._proc is None else self._proc.poll()

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def finished(self) -> bool:
        """True once the process has exited and all its output has been read (the next poll() holds the
        last events)."""
        return (self._proc is not None and self._proc.poll() is not None
                and not any(t.is_alive() for t in self._threads))

    def error_line(self) -> str:
        """One line saying why the child failed: its error event, else its last stderr error line."""
        return self.error or last_error_line(self.stderr_tail) or f"exited with code {self.returncode}"

    def outcome(self) -> RunOutcome:
        """How the finished child ended (call once `finished()`)."""
        code = self.returncode
        if code is None:
            raise RuntimeError("the child is still running")
        if self.cancelled:
            return RunOutcome("cancelled", code, None, "cancelled by the user")
        if code == 0:
            return RunOutcome("succeeded", code, self.result)
        return RunOutcome("cancelled" if code == 130 else "failed", code, self.result, self.error_line())

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop the child and everything it started: SIGTERM to its process group, SIGKILL after grace_s."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._proc.pid)], capture_output=True,
                           creationflags=CREATE_NO_WINDOW)
        else:
            pgid = self._proc.pid  # start_new_session made the child its group's leader
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:  # the whole group exited between poll() and here
                self._proc.wait()
                return
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait()

    def wait(self, on_event: Optional[EventHandler] = None, timeout: Optional[float] = None,
             interval: float = 0.05) -> int:
        """Block until the child has ended and every event was handed to `on_event`; returns the exit code.
        Past `timeout` seconds the child is cancelled and TimeoutError raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = self.finished()  # checked first, so the poll() below holds all its output once it exited
            for event in self.poll():
                if on_event:
                    on_event(event)
            if done:
                return int(self.returncode or 0)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"{' '.join(self.command[:6])} did not finish in {timeout} s")
            self.wait_event(interval)


#: The earlier name, kept for code written against it.
ChildProcess = ChildRun
