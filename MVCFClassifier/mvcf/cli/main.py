"""`mvcf` entry point.

Each command lives in `mvcf.cli.<name>` (mvcf.cli.stats for `mvcf stats`) and provides
`add_arguments(parser)` and `run(args, reporter) -> int`; heavy imports belong inside run().
An MVCFError becomes one line `error: ...` on stderr with exit code 2; anything else is a bug (exit 1).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from contextlib import nullcontext
from typing import Optional, Sequence

from mvcf import __version__, signals
from mvcf.cli.args import not_utf8
from mvcf.errors import Cancelled, MVCFError
from mvcf.progress import make_reporter, warnings_to

COMMANDS: dict[str, str] = {
    "synth": "Generate a synthetic two-institution OVCF/MVCF cohort (NIfTI + manifest.csv).",
    "views": "Build the 2D / 2.5D / 3D model input around one vertebra of a CT.",
    "predict": "Classify vertebrae of a CT (probability of a malignant fracture).",
    "screen": "Every vertebra of a spine segmentation: heights, Genant grade, trabecular HU, P(MVCF).",
    "train": "Train a 2D / 2.5D / 3D model from a cohort manifest; writes a model bundle.",
    "evaluate": "Evaluate a model bundle on a cohort manifest (metrics with CIs, plots).",
    "study": "The paper's design: 2D vs 2.5D vs 3D on identical splits, internal + external test.",
    "stats": "ROC/AUC with DeLong, operating points, calibration, reader-study (MRMC) analysis.",
    "worker": "Warm prediction worker: JSON-lines requests on stdin, results on stdout (the Slicer module's).",
    "reader-study": "Run a blinded reader study: plan, collect, report (ORH), simulate (power).",
    "demo": "Synthetic cohort -> study -> prediction on the shipped real CT, into a report folder.",
}


class UsageError(SystemExit):
    """A usage error argparse found (exit code 2); main() also sends it as the JSON-lines `error` event."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error: ...` line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        line = f"{message} (see '{self.prog} --help')"
        print(f"error: {line}", file=sys.stderr)
        raise UsageError(line)


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix must not silently become another option (screen's `--heatmap X` was read
    # as `--heatmap-method X`)
    parser = OneLineErrorParser(prog="mvcf", description="MVCF vs OVCF on CT. Research use only.",
                                allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"mvcf {__version__}")
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help="largest CT or mask accepted, in voxels (default 2^30; same as MVCF_MAX_VOXELS; "
                             "docs/reliability.md lists every limit)")
    parser.add_argument("--progress", choices=["tqdm", "jsonl", "none"], default="tqdm",
                        help="progress display: tqdm bar on stderr (plain 'progress:' lines when stderr is not a "
                             "terminal), JSON lines on stdout (child-process protocol used by the Slicer "
                             "modules), or none")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"mvcf.cli.{name.replace('-', '_')}")
        command = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def _wants_jsonl(argv: Sequence[str]) -> bool:
    """`--progress jsonl` among the arguments, read before argparse: its usage errors are events too."""
    argv = list(argv)
    return "--progress=jsonl" in argv or any(a == "--progress" and b == "jsonl" for a, b in zip(argv, argv[1:]))


def _never_fail_on_encoding() -> None:
    """On a terminal or pipe that is not UTF-8 (an ASCII locale), characters such as the en dash of a CI
    print as escapes instead of ending a finished run with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):   # a stream that cannot be reconfigured: leave it
                pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _never_fail_on_encoding()
    # first of all: a Ctrl-C or SIGTERM while the command modules import is one line and exit 130 too
    previous_handlers = signals.install()
    try:
        return _main(argv)
    finally:
        signals.restore(previous_handlers)


def _main(argv: list[str]) -> int:
    early = make_reporter("jsonl" if _wants_jsonl(argv) else "none")   # until the command's own exists
    odd = not_utf8(argv)
    if odd is not None:
        return _fail(early, f"the argument '{odd}' is not UTF-8 text (a name in another encoding); the CT and "
                            "image libraries cannot use such a path: rename it", 2)
    empty = empty_path_option(argv)
    if empty is not None:   # Path("") is ".": `--out ""` was refused as ". exists and was not written by mvcf"
        return _fail(early, f"{empty} is empty: give a path", 2)
    try:
        with signals.cancel_wins():
            parser = build_parser()
            args = parser.parse_args(argv)
        if getattr(args, "_module", None) is None:
            parser.print_help(sys.stderr)
            return _fail(early, "no command given (see 'mvcf --help')", 2)
        if args.max_voxels is not None and args.max_voxels < 1:
            parser.error("--max-voxels must be a positive number")
    except UsageError as exc:    # its line is on stderr already
        early.error(exc.message)
        return 2
    except MVCFError as exc:  # a core check used as an argument's type= (check_device_name, ...) refused it
        return _fail(early, str(exc).splitlines()[0], 2)
    except KeyboardInterrupt as exc:
        return _fail(early, signals.describe(exc), 130)
    saved_limit = os.environ.get("MVCF_MAX_VOXELS")
    if args.max_voxels is not None:
        os.environ["MVCF_MAX_VOXELS"] = str(args.max_voxels)
    reporter = make_reporter(args.progress)
    # the worker routes its warnings itself: its stdout is the request protocol
    logged = warnings_to(reporter) if getattr(args._module, "LOG_TO_REPORTER", True) else nullcontext()
    try:
        with logged, signals.cancel_wins():
            return int(args._module.run(args, reporter) or 0)
    except MVCFError as exc:
        return _fail(reporter, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                     130 if isinstance(exc, Cancelled) else 2)
    except OSError as exc:  # the disk, the permissions, a path: the user's to fix, never a traceback
        if isinstance(exc, BrokenPipeError) and _reader_gone():   # `mvcf ... | head`: nothing more to say
            return SIGPIPE_EXIT
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(reporter, f"cannot access{where}: {exc.strerror or exc}", 2)
    except KeyboardInterrupt as exc:
        signals.end_children()
        return _fail(reporter, signals.describe(exc), 130)
    finally:
        reporter.close()
        if args.max_voxels is not None and saved_limit is None:  # main() may run in-process (tests)
            os.environ.pop("MVCF_MAX_VOXELS", None)
        elif args.max_voxels is not None:
            os.environ["MVCF_MAX_VOXELS"] = saved_limit


def console() -> None:
    """The `mvcf` script and `python -m mvcf`: main(), then exit at once. Python's own teardown (torch's and
    ONNX Runtime's modules and threads) took 0.2-1.3 s after the result was out, up to 3 s on a loaded
    machine: waiting time for the Slicer modules and scripts, and a window in which a Cancel killed the
    finished process (status -15, nothing said). Every output is written, verified and closed by then
    (mvcf.fileio) and the workers are gone, so nothing is left for the teardown to do. main() itself keeps
    returning for in-process callers, and torchrun runs this module's __main__ with the full teardown."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:   # the reader left before the last of the output (`| head`), as above
            code = code or SIGPIPE_EXIT
        except (OSError, ValueError):   # a closed stream: nothing more can reach its reader anyway
            pass
    os._exit(code)


#: The options that name a file or folder: an empty one is a shell variable that was not set, never ".".
#: Kept by hand; test_cli_args checks that every option typed Path or shown as DIR/FILE/PATH/OUT is listed.
PATH_OPTIONS = ("--out", "--report", "--dicom-out", "--dicom-source", "--heatmap", "--views", "--ct", "--seg",
                "--mask", "--manifest", "--model", "--csv", "--model-csv", "--locations", "--readings",
                "--model-scores", "--plot", "--key", "--cache", "--answers")


def empty_path_option(argv: Sequence[str]) -> Optional[str]:
    """The first path option given an empty or blank value (`--out ""`, `--out=`), or None."""
    for i, token in enumerate(argv):
        name, equals, value = token.partition("=")
        if name not in PATH_OPTIONS:
            continue
        given = value if equals else (argv[i + 1] if i + 1 < len(argv) else None)
        if given is not None and not given.strip():
            return name
    return None


#: The exit status of a command whose standard output was closed by its reader, as a shell reports a program
#: ended by SIGPIPE (128 + 13).
SIGPIPE_EXIT = 141


def _reader_gone() -> bool:
    """True when the standard output's reader has closed it; the stream is then pointed at /dev/null, so that
    nothing more (the final flush) raises."""
    try:
        sys.stdout.flush()
        return False
    except (BrokenPipeError, ValueError):
        pass
    except OSError:
        return False
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):   # a stream with no file behind it (tests, embedding)
        pass
    return True


def _fail(reporter, message: str, code: int) -> int:
    reporter.close()
    reporter.error(message)
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
