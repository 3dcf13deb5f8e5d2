"""Run `mvcf train` / `mvcf study` / `mvcf stats mrmc` in a child process and route its events to callbacks.

The GUI stays live because the work happens in another process (PythonSlicer inside Slicer, the current
interpreter elsewhere); a QTimer in the module calls `MvcfRun.poll()`, which never blocks. Batch scripts
call `MvcfRun.wait()`. Events follow the mvcf.progress JSON-lines protocol. No Qt and no MRML here.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from MVCFClassifierLib.process import ChildProcess, mvcf_command

VIEW_MODES = ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")
DEVICES = ("auto", "cpu", "cuda")

ProgressHandler = Callable[[int, int, str, Optional[float]], None]
EventHandler = Callable[[dict], None]
LogHandler = Callable[[str, str], None]


def default_python() -> str:
    """The interpreter for the child: PythonSlicer inside Slicer (same packages, no GUI), else this one."""
    if "slicer" in sys.modules and getattr(sys.modules["slicer"], "app", None) is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
        beside = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
        if beside.exists():
            return str(beside)
    return sys.executable


@dataclass
class TrainConfig:
    """The options of `mvcf train` the module exposes. Defaults train on a laptop CPU in minutes (one split,
    10 epochs, 64 px views); empty/zero values leave the core's own default."""

    view: str = "2.5d-orthogonal"
    arch: str = ""
    epochs: int = 10
    learning_rate: float = 0.0
    folds: int = 1
    external: str = ""
    device: str = "auto"
    seed: int = 0
    size_px: int = 0
    extra_args: Sequence[str] = field(default_factory=tuple)

    def arguments(self) -> list[str]:
        if self.view not in VIEW_MODES:
            raise ValueError(f"view mode {self.view!r} is not one of {', '.join(VIEW_MODES)}")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        args = ["--view", self.view, "--epochs", str(int(self.epochs)), "--device", self.device,
                "--seed", str(int(self.seed))]
        if self.arch:
            args += ["--arch", self.arch]
        if self.learning_rate > 0:
            args += ["--lr", repr(float(self.learning_rate))]
        if self.folds > 0:
            args += ["--folds", str(int(self.folds))]
        if self.external:
            args += ["--external", self.external]
        if self.size_px > 0:
            args += ["--size", str(int(self.size_px))]
        return args + [str(a) for a in self.extra_args]


def train_arguments(manifest: os.PathLike, out_dir: os.PathLike, config: TrainConfig,
                    resume: bool = False) -> list[str]:
    args = ["train", "--manifest", str(manifest), "--out", str(out_dir), *config.arguments()]
    return args + ["--resume"] if resume else args


def command_options(command: str) -> Optional[set[str]]:
    """The option strings `mvcf <command>` accepts (from the installed core's parser), or None when this
    core has no such command."""
    import argparse

    from mvcf.cli.main import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return {o for a in action.choices[command]._actions for o in a.option_strings}
    return None


def _supported(command: str, options: Sequence[str]) -> list[str]:
    """Drop the `--option [value]` pairs that `mvcf <command>` does not accept (it may expose fewer knobs
    than train), so one TrainConfig serves both."""
    accepted = command_options(command)
    if accepted is None:
        return list(options)
    kept, i = [], 0
    while i < len(options):
        takes_value = i + 1 < len(options) and not str(options[i + 1]).startswith("--")
        width = 2 if takes_value else 1
        if options[i] in accepted:
            kept += list(options[i:i + width])
        i += width
    return kept


def study_arguments(manifest: os.PathLike, out_dir: os.PathLike, config: Optional[TrainConfig] = None,
                    resume: bool = False) -> list[str]:
    """`mvcf study`: every view mode on identical splits; the config's view is not passed, and options the
    study does not take are left out."""
    args = ["study", "--manifest", str(manifest), "--out", str(out_dir)]
    if config is not None:
        options = config.arguments()
        view_at = options.index("--view")
        args += _supported("study", options[:view_at] + options[view_at + 2:])
    return args + _supported("study", ["--resume"]) if resume else args


def mrmc_arguments(reader_csv: os.PathLike) -> list[str]:
    return ["stats", "mrmc", "--csv", str(reader_csv), "--json"]


def resumable(out_dir: os.PathLike) -> bool:
    """True when `out_dir` holds a checkpoint of an interrupted run (so `--resume` has something to use)."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return False
    return any(p.is_file() for pattern in ("**/*checkpoint*", "**/*.ckpt") for p in folder.glob(pattern))


class EtaEstimator:
    """Seconds left in the current phase, from the mean rate since the phase began.

    A phase is one (total, message prefix) pair: a study trains several models, each restarting `done`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._phase: Optional[tuple] = None
        self._start = 0.0
        self._start_done = 0

    def update(self, done: int, total: int, message: str = "") -> Optional[float]:
        now = self._clock()
        phase = (total, message.split(" ")[0] if message else "")
        if phase != self._phase or done < self._start_done:
            self._phase, self._start, self._start_done = phase, now, done
            return None
        steps = done - self._start_done
        if steps <= 0 or total <= 0:
            return None
        return max(0.0, (now - self._start) / steps * (total - done))


@dataclass
class RunOutcome:
    status: str  # "succeeded", "failed" or "cancelled"
    returncode: int
    result: Optional[dict] = None
    error: str = ""


class MvcfRun:
    """One `mvcf ...` child process; its events go to the callbacks given at construction."""

    def __init__(self, args: Sequence[str], python_executable: Optional[str] = None,
                 on_progress: Optional[ProgressHandler] = None, on_metrics: Optional[EventHandler] = None,
                 on_result: Optional[EventHandler] = None, on_log: Optional[LogHandler] = None,
                 env: Optional[dict] = None, command: Optional[Sequence[str]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.command = list(command) if command is not None else mvcf_command(args, python_executable
                                                                            or default_python())
        self._env = env
        self.on_progress, self.on_metrics, self.on_result, self.on_log = on_progress, on_metrics, on_result, on_log
        self._eta = EtaEstimator(clock)
        self._child: Optional[ChildProcess] = None
        self._clock = clock
        self.started_at: Optional[float] = None
        self.outcome: Optional[RunOutcome] = None

    def start(self) -> "MvcfRun":
        env = None
        if self._env is not None:
            env = {**os.environ, **self._env}
        self._child = ChildProcess(self.command, env=env).start()
        self.started_at = self._clock()
        return self

    @property
    def running(self) -> bool:
        return self._child is not None and self.outcome is None

    @property
    def pid(self) -> Optional[int]:
        return None if self._child is None else self._child.pid

    def _dispatch(self, event: dict) -> None:
        kind = event.get("event")
        fields = {k: v for k, v in event.items() if k != "event"}
        if kind == "progress":
            done, total = int(fields.get("done", 0)), int(fields.get("total", 0))
            message = str(fields.get("message", ""))
            eta = self._eta.update(done, total, message)
            if self.on_progress:
                self.on_progress(done, total, message, eta)
        elif kind == "metrics":
            if self.on_metrics:
                self.on_metrics(fields)
        elif kind == "result":
            if self.on_result:
                self.on_result(fields)
        elif kind == "error":
            if self.on_log:
                self.on_log(str(fields.get("message", "")), "error")
        elif self.on_log:
            self.on_log(str(fields.get("message", "")), str(fields.get("level", "info")))

    def poll(self) -> bool:
        """Dispatch the events that arrived; False once the child has ended and everything is dispatched."""
        if self._child is None:
            raise RuntimeError("start() the run first")
        if self.outcome is not None:
            return False
        finished = self._child.finished()
        for event in self._child.poll():
            self._dispatch(event)
        if finished:
            for event in self._child.poll():
                self._dispatch(event)
            self.outcome = self._make_outcome()
            return False
        return True

    def _make_outcome(self) -> RunOutcome:
        child = self._child
        assert child is not None
        code = int(child.returncode if child.returncode is not None else -1)
        if child.cancelled:
            return RunOutcome("cancelled", code, None, "cancelled by the user")
        if code == 0:
            return RunOutcome("succeeded", code, child.result)
        error = child.error or _last_error_line(child.stderr_tail) or f"exited with code {code}"
        return RunOutcome("cancelled" if code == 130 else "failed", code, child.result, error)

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop the child and everything it started; the next poll() reports the 'cancelled' outcome."""
        if self._child is not None:
            self._child.cancel(grace_s=grace_s)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> RunOutcome:
        """Block until the child ends (batch scripts); callbacks run in this thread as events arrive."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"{' '.join(self.command[2:6])} did not finish in {timeout} s")
            time.sleep(interval)
        assert self.outcome is not None
        return self.outcome


def _last_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    return lines[-1] if lines else ""


def format_eta(seconds: Optional[float]) -> str:
    """'about 2 min 05 s left' style text for the status line."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"about {seconds // 3600} h {seconds % 3600 // 60:02d} min left"
    if seconds >= 60:
        return f"about {seconds // 60} min {seconds % 60:02d} s left"
    return f"about {seconds} s left"


def describe_progress(done: int, total: int, message: str, eta: Optional[float]) -> str:
    parts = [message or "working", f"{done}/{total}" if total else ""]
    eta_text = format_eta(eta)
    if eta_text:
        parts.append(eta_text)
    return " — ".join(p for p in parts if p)


def result_summary(result: Optional[dict[str, Any]]) -> str:
    """A one-line summary of a result payload (numbers the user looks for first)."""
    if not result:
        return ""
    keys = [k for k in ("bundle", "out", "auc", "external_auc", "internal_auc") if k in result]
    return ", ".join(f"{k}={result[k]}" for k in keys)
