"""Write golden/outputs.json from the current code. Run once before a behaviour-preserving refactor:

    python Testing/Python/golden/make_golden.py             # the reference (every part)
    python Testing/Python/golden/make_golden.py --machine   # this CPU kind's bit-exact record (machines.json)

`--machine` adds a record for a CPU kind that has none yet, from code whose behaviour is the one pinned
(e.g. a checkout of the last commit that passed on another machine); golden_runs.py says why it is needed.
"""
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import conftest  # noqa: E402,F401  (puts the module folders on sys.path)
from golden_runs import MACHINE_PARTS, machine, record  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        outputs = record(Path(work))
    if "--machine" in sys.argv[1:]:
        path = HERE / "machines.json"
        machines = json.loads(path.read_text()) if path.is_file() else {}
        machines[machine()] = {part: outputs[part] for part in MACHINE_PARTS}
        path.write_text(json.dumps(machines, indent=1, sort_keys=True) + "\n")
        print(f"wrote {machine()!r} to {path}")
    else:
        (HERE / "outputs.json").write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
        print(f"wrote {HERE / 'outputs.json'}")
