"""What every benchmark does with its result: print the JSON and, with --out, write it atomically."""
from __future__ import annotations

import json
from typing import Any, Optional


def emit(payload: dict[str, Any], out: Optional[str]) -> None:
    from mvcf.fileio import write_text

    text = json.dumps(payload, indent=2)
    print(text)
    if out:
        write_text(out, text + "\n")
