"""Write golden/outputs.json from the current code. Run once before a behaviour-preserving refactor:

    python Testing/Python/golden/make_golden.py
"""
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import conftest  # noqa: E402,F401  (puts the module folders on sys.path)
from golden_runs import record  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        outputs = record(Path(work))
    (HERE / "outputs.json").write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'outputs.json'}")
