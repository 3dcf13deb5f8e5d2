"""Arguments of `mvcf train` / `mvcf study` / `mvcf stats mrmc` and the routing of a child's events to
callbacks, with an ETA. The child itself is MVCFClassifierLib.process.ChildRun (the one child-run class of
both modules). No Qt and no MRML here.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional, Sequence

from mvcf.train import TrainConfig

from MVCFClassifierLib.choices import DEVICES, view_modes

ProgressHandler = Callable[[int, int, str, Optional[float]], None]
EventHandler = Callable[[dict], None]
LogHandler = Callable[[str, str], None]

#: mvcf.train.TrainConfig field -> the `mvcf train` option that sets it (fields not listed have no option
#: and must keep the core's default).
TRAIN_OPTIONS = {"arch": "--arch", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                 "patience": "--patience", "seed": "--seed", "device": "--device", "mil_pooling": "--mil-pooling"}


def module_training(**overrides) -> TrainConfig:
    """The core's training settings with the module's defaults (10 epochs: minutes on a laptop CPU)."""
    return TrainConfig(**{"epochs": 10, **overrides})


@dataclass
class RunSettings:
    """One train or study run as the module asks for it: the view and split choices, and the core's own
    training settings (mvcf.train.TrainConfig, the object `mvcf train` builds from the same options).
    `size_px` 0 leaves the core's view size; `n_slices` / `slice_gap_mm` 0 leave the stacked modes' own
    stack (mvcf.modes.stacked_names; the core refuses them for a view mode without a stack)."""

    view: str = "2.5d-orthogonal"
    folds: int = 1
    external: str = ""
    size_px: int = 0
    n_slices: int = 0
    slice_gap_mm: float = 0.0
    training: TrainConfig = field(default_factory=module_training)
    extra_args: Sequence[str] = field(default_factory=tuple)

    def arguments(self) -> list[str]:
        if self.view not in view_modes():
            raise ValueError(f"view mode {self.view!r} is not one of {', '.join(view_modes())}")
        if self.training.device not in DEVICES:
            raise ValueError(f"device {self.training.device!r} is not one of {', '.join(DEVICES)}")
        args = ["--view", self.view, *training_arguments(self.training)]
        if self.folds > 0:
            args += ["--folds", str(int(self.folds))]
        if self.external:
            args += ["--external", self.external]
        if self.size_px > 0:
            args += ["--size", str(int(self.size_px))]
        if self.n_slices > 0:
            args += ["--n-slices", str(int(self.n_slices))]
        if self.slice_gap_mm > 0:
            args += ["--slice-gap", repr(float(self.slice_gap_mm))]
        return args + [str(a) for a in self.extra_args]


def training_arguments(config: TrainConfig) -> list[str]:
    """`mvcf train` options that reproduce `config`; a setting the command line cannot carry is refused."""
    default = TrainConfig()
    args: list[str] = []
    for item in fields(TrainConfig):
        value = getattr(config, item.name)
        if item.name in TRAIN_OPTIONS:
            args += [TRAIN_OPTIONS[item.name], repr(value) if isinstance(value, float) else str(value)]
        elif item.name == "augment":
            args += [] if value else ["--no-augment"]
        elif value != getattr(default, item.name):
            raise ValueError(f"training setting {item.name}={value!r} has no mvcf train option")
    return args


def train_arguments(manifest: os.PathLike, out_dir: os.PathLike, settings: RunSettings,
                    resume: bool = False, allow_outside_root: bool = False) -> list[str]:
    """`mvcf train`; `allow_outside_root` for a manifest naming files outside its folder that the user chose
    (the Slicer panel's cohort, whose CTs stay where they were loaded from)."""
    args = ["train", "--manifest", str(manifest), "--out", str(out_dir), *settings.arguments()]
    args += ["--allow-outside-root"] if allow_outside_root else []
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
    than train), so one RunSettings serves both."""
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


def study_arguments(manifest: os.PathLike, out_dir: os.PathLike, settings: Optional[RunSettings] = None,
                    resume: bool = False, allow_outside_root: bool = False) -> list[str]:
    """`mvcf study`: every view mode on identical splits; the settings' view is not passed, and options the
    study does not take are left out."""
    args = ["study", "--manifest", str(manifest), "--out", str(out_dir)]
    args += _supported("study", ["--allow-outside-root"]) if allow_outside_root else []
    if settings is not None:
        options = settings.arguments()
        view_at = options.index("--view")
        args += _supported("study", options[:view_at] + options[view_at + 2:])
    return args + _supported("study", ["--resume"]) if resume else args


def mrmc_arguments(reader_csv: os.PathLike) -> list[str]:
    return ["stats", "mrmc", "--csv", str(reader_csv), "--json"]


def resumable(out_dir: os.PathLike, study: bool = False) -> bool:
    """True when `out_dir` holds a training run (or, with `study`, a study) of mvcf that `--resume` continues:
    the record such a run writes first, as the core checks it (a folder of the user's with a file named like
    a checkpoint was taken for one, and a run stopped before its first checkpoint was not)."""
    from mvcf import study as study_module
    from mvcf import train as train_module

    record = (study_module if study else train_module).RUN_RECORD
    return (Path(out_dir) / record).is_file()


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


class EventRouter:
    """Hands each event of a child (ChildRun.poll()/wait()) to the callback for its kind, with an ETA on
    progress events: `run.wait(on_event=EventRouter(on_progress=...))`."""

    def __init__(self, on_progress: Optional[ProgressHandler] = None, on_metrics: Optional[EventHandler] = None,
                 on_result: Optional[EventHandler] = None, on_log: Optional[LogHandler] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_progress, self.on_metrics, self.on_result, self.on_log = on_progress, on_metrics, on_result, on_log
        self._eta = EtaEstimator(clock)

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        payload = {k: v for k, v in event.items() if k != "event"}
        if kind == "progress":
            done, total = int(payload.get("done", 0)), int(payload.get("total", 0))
            message = str(payload.get("message", ""))
            eta = self._eta.update(done, total, message)
            if self.on_progress:
                self.on_progress(done, total, message, eta)
        elif kind == "metrics":
            if self.on_metrics:
                self.on_metrics(payload)
        elif kind == "result":
            if self.on_result:
                self.on_result(payload)
        elif self.on_log:
            level = "error" if kind == "error" else str(payload.get("level", "info"))
            self.on_log(str(payload.get("message", "")), level)


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
