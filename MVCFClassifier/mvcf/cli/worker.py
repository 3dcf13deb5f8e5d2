"""`mvcf worker`: a warm prediction and evaluation worker speaking JSON lines on stdin/stdout (protocol:
mvcf.worker).

The Slicer modules keep one alive (the Classifier between Applies, the Training module between
evaluations) so that only the first request pays the start-up and the model loading.
"""
from __future__ import annotations

import argparse

#: mvcf.cli.main routes the core's logged warnings through the reporter; the worker's stdout is its protocol
#: (mvcf.worker), where a line without a request id would be noise: it tags each request's warnings itself.
LOG_TO_REPORTER = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", help="model bundle loaded at start (default: the embedded demo "
                        "model); a request may name another")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])
    parser.add_argument("--idle-exit", type=float, default=600.0, metavar="SECONDS",
                        help="exit after this long without a request (default 600)")


def run(args: argparse.Namespace, reporter) -> int:
    from mvcf.errors import MVCFError
    from mvcf.worker import main

    if not args.idle_exit > 0:
        raise MVCFError("--idle-exit must be a positive number of seconds")
    return main(args.model, args.device, args.backend, args.idle_exit)
