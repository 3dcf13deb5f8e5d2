"""A warm prediction worker: one process, the model loaded once, requests and results as JSON lines.

`mvcf worker` reads one JSON request per line on stdin and answers on stdout with the events of the
mvcf.progress protocol, each tagged with the request's `id`:

    -> {"id": "1", "command": "predict", "ct": "ct.nrrd", "locations": "locations.json"}
       (`locations`: a locations file, or its entries inline as a list; optional "model", "device",
        "backend", "refine": as for `mvcf predict`)
    <- {"event": "progress", "id": "1", "done": 1, "total": 3, "message": "loading the model"}
    <- {"event": "log", "id": "1", "level": "warning", "message": "..."}   (what the core logged meanwhile)
    <- {"event": "result", "id": "1", "results": [...], "timing_ms": {...}, "disclaimer": "..."}
       (the payload of `mvcf predict --locations`), or {"event": "error", "id": "1", "message": "..."}
    -> {"id": "2", "command": "evaluate", "model": "bundle", "manifest": "cohort.csv", "out": "folder"}
       (optional "device", "cache", "overwrite", "allow_outside_root": as for `mvcf evaluate`)
    <- progress events, then {"event": "result", "id": "2", "report": {...}} (what `mvcf evaluate --json`
       prints; torch and MONAI are imported by the first evaluate request and stay loaded)
    -> {"id": "3", "command": "ping"}      <- {"event": "pong", "id": "3"}
    -> {"command": "shutdown"}             <- {"event": "exit", "reason": "shutdown"}

On start it loads the bundle and says {"event": "ready", "pid", "model", "backend", "device", "load_ms"}
(or {"event": "error", "fatal": true, ...} and exits with code 2 when the bundle is refused).
A bad request (not JSON, unknown command, unreadable CT, bad locations) gets an error event and the
worker goes on. It exits by itself after `idle_exit_s` without a request ({"event": "exit", "reason":
"idle"}) and when stdin closes (its parent is gone). Cancel = kill the process (group): the client's job.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any, Optional, Union

from mvcf import signals
from mvcf.cli.args import not_utf8
from mvcf.errors import MVCFError
from mvcf.progress import JsonLinesReporter, warnings_to

log = logging.getLogger(__name__)

DEFAULT_IDLE_EXIT_S = 600.0


#: The longest request line read (a request names files and options: kilobytes); longer ones are skipped.
MAX_REQUEST_BYTES = 16 << 20
TOO_LONG = object()

class _Tagged:
    """The request's events: every one carries its id."""

    def __init__(self, channel: JsonLinesReporter, request_id: Any) -> None:
        self.channel, self.id = channel, request_id

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.channel.emit("progress", id=self.id, done=int(done), total=int(total), message=message)

    def log(self, message: str, level: str = "info") -> None:
        self.channel.emit("log", id=self.id, level=level, message=message)


class Worker:
    """The request loop (no process handling: `serve` is driven by `mvcf worker` or by a test)."""

    def __init__(self, channel: IO[str], model: Optional[str] = None, device: str = "auto",
                 backend: str = "auto", idle_exit_s: float = DEFAULT_IDLE_EXIT_S) -> None:
        self.channel = JsonLinesReporter(channel)
        self.model, self.device, self.backend = model, device, backend
        self.idle_exit_s = idle_exit_s
        self.served = 0
        self._ct: Optional[tuple[tuple, Any]] = None  # (file identity, CTImage) of the last CT read

    def read_ct(self, path: str, series_uid: Optional[str] = None):
        """read_ct, memoised for the last CT file: the same file (path and outputs_guard.content_stamp) is
        read and validated once. DICOM folders are always read again (a file may change inside)."""
        from mvcf.outputs_guard import content_stamp
        from mvcf.read_ct import read_ct

        resolved = Path(path).resolve()
        if not resolved.is_file():
            return read_ct(path, series_uid=series_uid)
        key = (str(resolved), content_stamp(resolved), series_uid)
        if self._ct is None or self._ct[0] != key:
            self._ct = None  # the old CT's memory goes before the new one is read
            self._ct = (key, read_ct(path, series_uid=series_uid))
        return self._ct[1]

    def load(self) -> None:
        """Load the default bundle now (so the first request pays only the work) and say ready."""
        from mvcf.inference import load_model

        started = time.perf_counter()
        bundle = load_model(self.model, self.device, self.backend)
        self.channel.emit("ready", pid=os.getpid(), model=bundle.identity(), backend=bundle.backend,
                          device=bundle.device, load_ms=round(1000 * (time.perf_counter() - started), 2))

    def serve(self, requests: Union[IO[str], IO[bytes]]) -> str:
        """Answer requests until shutdown, end of input or idle timeout; returns why it stopped."""
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def read() -> None:
            while True:   # bytes are decoded here: a line that is not UTF-8 never ends the reading
                line = requests.readline(MAX_REQUEST_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_REQUEST_BYTES:   # a 600 MB line was parsed whole (1.9 GB): skipped instead
                    while line and not line.endswith(b"\n" if isinstance(line, bytes) else "\n"):
                        line = requests.readline(1 << 20)
                    lines.put(TOO_LONG)
                    continue
                lines.put(line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=self.idle_exit_s)
            except queue.Empty:
                self.channel.emit("exit", reason="idle", idle_s=self.idle_exit_s, served=self.served)
                return "idle"
            if line is None:
                return "end of input"
            if line is TOO_LONG:
                self.channel.emit("error", id=None, message=f"a request line longer than {MAX_REQUEST_BYTES >> 20} "
                                  "MiB was skipped (a request names files; it holds no data)")
                continue
            if not line.strip():
                continue
            if self.handle(line) == "shutdown":
                self.channel.emit("exit", reason="shutdown", served=self.served)
                return "shutdown"

    def handle(self, line: str) -> Optional[str]:
        """One request line; every failure becomes an error event for that request."""
        request_id = None
        try:
            with signals.cancel_wins():   # a cancel ends the worker (exit 130), not as this request's error
                request = _parse(line)
                request_id = request.get("id")
                _check_text(request)
                command = request.get("command")
                if command == "shutdown":
                    return "shutdown"
                if command == "ping":
                    self.channel.emit("pong", id=request_id, served=self.served)
                elif command == "predict":
                    with warnings_to(_Tagged(self.channel, request_id)):
                        payload = self.predict(request)
                    self.channel.emit("result", id=request_id, **payload)
                    self.served += 1
                elif command == "evaluate":
                    with warnings_to(_Tagged(self.channel, request_id)):
                        report = self.evaluate(request)
                    self.channel.emit("result", id=request_id, report=report)
                    self.served += 1
                else:
                    raise MVCFError(f"unknown command {command!r}; one of predict, evaluate, ping, shutdown")
        except MVCFError as exc:
            self.channel.emit("error", id=request_id, message=(str(exc).splitlines() or ["error"])[0])
        except Exception as exc:  # noqa: BLE001 - a bug in one request must not end the worker
            traceback.print_exc(file=sys.stderr)
            self.channel.emit("error", id=request_id, message=f"internal error: {type(exc).__name__}: {exc}"
                              .splitlines()[0])
        return None

    def _device(self, request: dict[str, Any]) -> str:
        """The request's device (default: the worker's), checked by name."""
        from mvcf.inference import check_device_name

        device = request.get("device", self.device)
        check_device_name(device if isinstance(device, str) else repr(device))
        return device

    def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        from mvcf.locations_file import parse_entries, read_locations
        from mvcf.predict import predict_ct_file

        ct = request.get("ct")
        if not isinstance(ct, str) or not ct:
            raise MVCFError("predict needs 'ct': the path of a CT file or DICOM folder")
        _only_fields(request, {"ct", "locations", "base", "model", "device", "backend", "refine", "heatmap_method"})
        device = self._device(request)
        model, base = _path(request, "model", self.model), _path(request, "base", ".")
        refine = _flag(request, "refine")
        locations = request.get("locations")
        if isinstance(locations, str):
            queries = read_locations(locations)
        elif isinstance(locations, list):
            queries = parse_entries(locations, Path(base), "the request's locations")
        else:
            raise MVCFError("predict needs 'locations': a locations file or a list of entries")
        payload, _, _ = predict_ct_file(ct, queries, model, device,
                                     request.get("backend", self.backend),
                                     refine=refine,
                                     on_progress=_Tagged(self.channel, request.get("id")).progress,
                                     read=self.read_ct, heatmap_method=_heatmap_method(request))
        return payload

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """`mvcf evaluate` in this process: a bundle on a cohort manifest, written to `out`."""
        from mvcf.evaluate import evaluate

        _only_fields(request, {"model", "manifest", "out", "device", "cache", "overwrite", "allow_outside_root"})
        for name in ("model", "manifest", "out"):
            if not isinstance(request.get(name), str) or not request[name]:
                raise MVCFError(f"evaluate needs '{name}': a path")
        device = self._device(request)
        cache, overwrite = _path(request, "cache", None), _flag(request, "overwrite")
        allow_outside_root = _flag(request, "allow_outside_root")
        return evaluate(request["model"], request["manifest"], request["out"], device=device,
                        cache_dir=cache, overwrite=overwrite,
                        on_progress=_Tagged(self.channel, request.get("id")).progress,
                        allow_outside_root=allow_outside_root)


def _parse(line: str) -> dict[str, Any]:
    """One request line as a JSON object; anything else is one MVCFError line."""
    from mvcf.json_input import JSONInputError, loads

    try:
        request = loads(line.encode("utf-8", "surrogateescape"))   # the bytes as read: strict UTF-8 here
    except JSONInputError as exc:
        raise MVCFError(f"request is not valid JSON: {exc.reason}") from None
    if not isinstance(request, dict):
        raise MVCFError("a request is a JSON object with a 'command'")
    return request


def _check_text(request: dict[str, Any]) -> None:
    """Every key and string of the request is UTF-8 text (ITK aborts the whole process on a path that is not)."""
    stack: list[Any] = [request]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and (odd := not_utf8([item])) is not None:
            raise MVCFError(f"request holds text that is not UTF-8 ('{odd[:80]}'); the CT and image libraries "
                            "cannot use such a path: send UTF-8 (rename the file)")


def _path(request: dict[str, Any], name: str, default: Optional[str]) -> Optional[str]:
    """An optional path field: absent or null is `default`, anything but a non-empty string is refused."""
    value = request.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise MVCFError(f"'{name}' must be a path, got {value!r}"[:200])
    return value


def _flag(request: dict[str, Any], name: str) -> bool:
    """An optional true/false field: absent or null is false; "false", 0 or "no" are refused, never read as true."""
    value = request.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MVCFError(f"'{name}' must be true or false, got {value!r}"[:200])
    return value


def _only_fields(request: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(request) - {"id", "command"} - allowed
    if unknown:
        raise MVCFError(f"unknown request field(s): {', '.join(sorted(unknown))}")


def main(model: Optional[str], device: str, backend: str, idle_exit_s: float) -> int:
    """`mvcf worker`: the protocol owns stdout, so anything else printed goes to stderr."""
    channel = sys.stdout
    sys.stdout = sys.stderr
    worker = Worker(channel, model, device, backend, idle_exit_s)
    try:
        worker.load()
    except MVCFError as exc:
        worker.channel.emit("error", id=None, fatal=True, message=(str(exc).splitlines() or ["error"])[0])
        return 2
    worker.serve(getattr(sys.stdin, "buffer", sys.stdin))
    return 0


def _heatmap_method(request: dict[str, Any]) -> str:
    """A request's heatmap method: absent or null is the default (gradcam); anything but a name is refused."""
    method = request.get("heatmap_method")
    if method is None:
        return "gradcam"
    if not isinstance(method, str):
        raise MVCFError(f"heatmap_method must be a name (gradcam or occlusion), got {method!r}")
    return method
