"""The Classifier's warm worker: one `mvcf worker` child kept alive between Applies (protocol: mvcf.worker).

The first Apply starts it and pays the start-up and the model loading; later Applies send a request over
its stdin and pay only the work. Cancel kills it (the next Apply starts a fresh one), so does closing the
scene; a worker that crashed is reported as the failure of the request it was serving, and one that
exited on its own after being idle is simply started again. Pure Python, no Qt: tested with real
children under pytest.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from MVCFClassifierLib.process import ChildRun, RunOutcome, mvcf_command

DEFAULT_IDLE_EXIT_S = 900.0


class WorkerRequest:
    """One request to the warm worker, with the part of ChildRun's interface a PredictionRun reads
    (finished(), poll(), wait(), result, error, error_line(), returncode, started_at, cancel())."""

    def __init__(self, worker: "WarmWorker", request: dict) -> None:
        self.worker = worker
        self.request = request
        self.id = str(request["id"])
        self.command = ["mvcf", "worker", f"request {self.id}"]
        self.events: list[dict] = []
        self.result: Optional[dict] = None
        self.error: Optional[str] = None
        self.returncode: Optional[int] = None
        self.stderr_tail = ""
        self.cancelled = False
        self.started_at = time.monotonic()

    def _deliver(self, event: dict) -> None:
        self.events.append(event)
        kind = event.get("event")
        if kind in ("result", "pong"):
            self.result = {k: v for k, v in event.items() if k not in ("event", "id")}
            self.returncode = 0
        elif kind == "error":
            self.error = str(event.get("message", ""))
            self.returncode = 2

    def _fail(self, message: str, returncode: int, stderr_tail: str) -> None:
        self.error, self.returncode, self.stderr_tail = message, returncode, stderr_tail

    def poll(self) -> list[dict]:
        """Events for this request that arrived since the last call; never blocks."""
        self.worker.pump()
        events, self.events = self.events, []
        return events

    def finished(self) -> bool:
        self.worker.pump()
        return self.returncode is not None and not self.events

    def error_line(self) -> str:
        return self.error or f"the worker gave no answer (code {self.returncode})"

    def outcome(self) -> RunOutcome:
        """How the request ended, as ChildRun.outcome() says it for a child (call once finished())."""
        if self.returncode is None:
            raise RuntimeError("the request is still running")
        if self.cancelled:
            return RunOutcome("cancelled", self.returncode, None, "cancelled by the user")
        if self.returncode == 0:
            return RunOutcome("succeeded", 0, self.result)
        return RunOutcome("failed", self.returncode, self.result, self.error_line())

    def wait_event(self, timeout: float) -> None:
        """Block until the worker says something (or `timeout` s): see ChildRun.wait_event."""
        if self.events or self.returncode is not None:
            return
        child = self.worker.child
        if child is not None:
            child.wait_event(timeout)
        else:
            time.sleep(timeout)

    #: ChildRun's blocking loop works on anything with finished(), poll(), wait_event(), returncode, cancel()
    #: and command.
    wait = ChildRun.wait

    def cancel(self) -> None:
        """Cancel = end the worker (its next request starts a fresh one)."""
        self.cancelled = True
        self.worker.stop()
        if self.returncode is None:
            self._fail("cancelled by the user", 130, "")


class WarmWorker:
    """Starts `mvcf worker` on demand and keeps it between requests.

    `submit(request)` returns a WorkerRequest (start-up included when no worker is alive); `stop()` kills
    it; `alive` says whether one is running. One request at a time (Apply is disabled while one runs)."""

    def __init__(self, python_executable: Optional[str] = None, args: Sequence[str] = (),
                 idle_exit_s: float = DEFAULT_IDLE_EXIT_S, env: Optional[dict] = None,
                 cwd: Optional[str] = None) -> None:
        self.python_executable = python_executable
        self.args = list(args)
        self.idle_exit_s = idle_exit_s
        self.env, self.cwd = env, cwd
        self.child: Optional[ChildRun] = None
        self.current: Optional[WorkerRequest] = None
        self.ready: Optional[dict] = None
        self.starts = 0
        self._count = 0

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.running

    @property
    def pid(self) -> Optional[int]:
        return self.child.pid if self.alive and self.child is not None else None

    def _start(self) -> None:
        command = mvcf_command(["worker", "--idle-exit", f"{self.idle_exit_s:g}", *self.args],
                               python_executable=self.python_executable)
        self.child = ChildRun(command, env=self.env, cwd=self.cwd, requests=True).start()
        self.ready = None
        self.starts += 1

    def submit(self, request: dict[str, Any]) -> WorkerRequest:
        """Send one request (an `id` is added); starts a worker first when none is alive."""
        self._count += 1
        pending = WorkerRequest(self, {**request, "id": f"r{self._count}"})
        self.current = pending
        self._send(pending)
        return pending

    def _send(self, pending: WorkerRequest) -> None:
        for attempt in (1, 2):
            if not self.alive:
                self._start()
            assert self.child is not None
            try:
                self.child.send(pending.request)
                return
            except (BrokenPipeError, OSError):  # it exited (idle) between alive and write: start a fresh one
                self.stop()
                if attempt == 2:
                    raise

    def pump(self) -> None:
        """Route the worker's events to the current request; notice a worker that died under it."""
        if self.child is None:
            return
        child = self.child
        exited = child.finished()
        for event in child.poll():
            kind = event.get("event")
            if kind == "ready":
                self.ready = event
            elif kind == "exit" and event.get("reason") == "idle":
                if self.current is not None and self.current.returncode is None:
                    self.child = None
                    self._send(self.current)  # the request crossed the idle exit: send it to a fresh one
                    return
            elif self.current is not None and (event.get("id") == self.current.id or event.get("fatal")):
                self.current._deliver(event)
        if exited and self.child is child:
            self.child = None
            if self.current is not None and self.current.returncode is None:
                tail = child.stderr_tail
                last = [line for line in tail.splitlines() if line.strip()]
                code = child.returncode if child.returncode is not None else -1
                self.current._fail(f"the prediction worker stopped unexpectedly (exit code {code})"
                                   + (f": {last[-1]}" if last else ""), code or 1, tail)

    def stop(self) -> None:
        """Kill the worker (Cancel, scene close, module cleanup); nothing happens when none is running."""
        child, self.child = self.child, None
        if child is not None:
            child.cancel()


class CTFileCache:
    """The CT the warm worker reads, written once per volume: a later Apply on the same volume node with
    the same voxels (its image data's modification time) and the same world geometry reuses the file, and
    the worker reuses what it read from it (mvcf.worker.Worker.read_ct). A changed volume gets a file of a
    new name, so the worker can never serve the old one. `clear()` deletes the folder (scene close)."""

    def __init__(self, temp_root: Optional[str] = None) -> None:
        self.temp_root = temp_root
        self.folder: Optional[Path] = None
        self.key: Optional[tuple] = None
        self.path: Optional[Path] = None
        self.writes = 0

    @staticmethod
    def identity(ct_node) -> Optional[tuple]:
        from MVCFClassifierLib.volumes import world_ijk_to_ras

        image = ct_node.GetImageData() if ct_node is not None else None
        if image is None:
            return None
        return (ct_node.GetID(), image.GetMTime(), tuple(np.round(world_ijk_to_ras(ct_node), 9).ravel()))

    def ct_path(self, ct_node, write: Callable[[Path], None]) -> Path:
        """The CT file of `ct_node`; `write(path)` writes it when there is no current one (its errors,
        e.g. a volume without voxels, pass through)."""
        key = self.identity(ct_node)
        if key is not None and key == self.key and self.path is not None and self.path.is_file():
            return self.path
        if self.folder is None or not self.folder.is_dir():
            self.folder = Path(tempfile.mkdtemp(prefix="mvcf-ct-", dir=self.temp_root))
        old, self.key, self.path = self.path, None, None
        if old is not None:
            old.unlink(missing_ok=True)
        self.writes += 1
        path = self.folder / f"ct_{self.writes}.nrrd"
        write(path)
        self.key, self.path = key, path
        return path

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = self.key = self.path = None
