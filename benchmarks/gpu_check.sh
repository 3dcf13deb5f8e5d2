#!/bin/sh
# The GPU checks (benchmarks/gpu_check.py) as one prepared run for a lent GPU machine: under 4 minutes,
# one JSON in benchmarks/results/gpu_check.json (or $OUT/gpu_check.json when OUT is set), then the CUDA tests.
#     sh benchmarks/gpu_check.sh            # from the repository root, with the test environment's python
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY="${PYTHON:-.venv/bin/python}"
RESULT="${OUT:-benchmarks/results}/gpu_check.json"
mkdir -p "$(dirname "$RESULT")"
export PYTHONPATH="$PWD/MVCFClassifier:$PWD/MVCFTraining${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| onnxruntime', o.__version__, o.get_available_providers())"
timeout 150 "$PY" benchmarks/gpu_check.py --out "$RESULT"
timeout 80 "$PY" -m pytest -q -x Testing/Python/test_cuda.py -k "not ddp" -p no:cacheprovider || echo "gpu_check: CUDA tests failed or timed out"
