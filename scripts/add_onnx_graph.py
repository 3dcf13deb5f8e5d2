#!/usr/bin/env python
"""Add (or regenerate) the ONNX graph of existing model bundles, so that `mvcf predict` runs them with
ONNX Runtime and without torch.

    python scripts/add_onnx_graph.py [BUNDLE ...]      # default: the embedded demo bundle

Each bundle is verified as usual (card, weights sha256), its network exported to `model.onnx`, checked
against torch on the probe input, and recorded in the card's `onnx` entry (mvcf.models.onnx_graph). The
weights are not touched. Bundles written by `mvcf train` / `mvcf study` (and scripts/train_demo_model.py)
already carry their graph; this is for older bundles and for regenerating one after editing a card by hand.
Exit code 2 with one `error:` line when a bundle is refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MVCFClassifier"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", type=Path, help="model bundle folders (default: the demo bundle)")
    args = parser.parse_args(argv)

    from mvcf.errors import MVCFError
    from mvcf.models.bundle import add_graph
    from mvcf.inference import default_model_path

    for bundle in args.bundles or [default_model_path()]:
        try:
            entry = add_graph(bundle)
        except MVCFError as exc:
            print(f"error: {bundle}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"{bundle}: {entry['file']} sha256 {entry['sha256'][:12]} (weights {entry['weights_sha256'][:12]}, "
              f"probe {entry['probe']['probabilities']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
