"""Run an `mvcf` command in a child process and read its JSON-lines events without blocking.

The Slicer modules use it so the GUI stays live (a QTimer calls `poll()`), and Cancel kills the whole
process tree. Pure Python: no Qt, so it is tested with a real child process under pytest.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Callable, Optional, Sequence


def core_path() -> str:
    """The folder that holds the `mvcf` package (put on the child's PYTHONPATH)."""
    return str(Path(__file__).resolve().parent.parent)


def mvcf_command(args: Sequence[str], python_executable: Optional[str] = None) -> list[str]:
    """Command line for `python -m mvcf --progress jsonl <args>`; inside Slicer pass PythonSlicer's path."""
    return [python_executable or sys.executable, "-m", "mvcf", "--progress", "jsonl", *map(str, args)]


class ChildProcess:
    """One child process; events are dicts of the mvcf.progress JSON-lines protocol."""

    def __init__(self, command: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.command = list(command)
        self._env = dict(os.environ if env is None else env)
        self._env["PYTHONPATH"] = os.pathsep.join(p for p in (core_path(), self._env.get("PYTHONPATH", "")) if p)
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._cwd = cwd
        self._proc: Optional[subprocess.Popen] = None
        self._events: "queue.Queue[dict]" = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=200)
        self._threads: list[threading.Thread] = []
        self.cancelled = False
        self.result: Optional[dict] = None
        self.error: Optional[str] = None

    def start(self) -> "ChildProcess":
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, env=self._env, cwd=self._cwd, text=True,
                                      encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

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
                self.error = event.get("message", "")
            self._events.put(event)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def poll(self) -> list[dict]:
        """Events that arrived since the last call; never blocks."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

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
        """True once the process has exited and all its output has been read."""
        return (self._proc is not None and self._proc.poll() is not None
                and not any(t.is_alive() for t in self._threads))

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop the child and everything it started: SIGTERM to its process group, SIGKILL after grace_s."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._proc.pid)], capture_output=True)
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

    def wait(self, on_event: Optional[Callable[[dict], None]] = None, timeout: Optional[float] = None) -> int:
        """Block until the child ends (batch use); each event goes to on_event as it arrives."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            for event in self.poll():
                if on_event:
                    on_event(event)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"{self.command[:4]} did not finish in {timeout} s")
            time.sleep(0.05)
        for event in self.poll():
            if on_event:
                on_event(event)
        return int(self.returncode or 0)
