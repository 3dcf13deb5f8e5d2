#!/usr/bin/env bash
# Batch examples without Slicer (plain `mvcf`): a synthetic cohort -> train -> evaluate -> study, then
# classify a folder of CTs with the trained model. Research use only; the numbers are synthetic.
#
#   scripts/train_from_manifest.sh [WORK_DIR] [CT_FOLDER]
#
# WORK_DIR (default mvcf_batch) must not hold earlier outputs. CT_FOLDER (optional) holds <case>.nii.gz CTs
# with TotalSegmentator-style label maps <case>_seg.nii.gz; LABEL (default 31 = L1) picks the vertebra.
# Your own cohort: skip the synth step and point MANIFEST at your manifest CSV (docs/training_module.md).
set -euo pipefail

WORK=${1:-mvcf_batch}
CT_FOLDER=${2:-}
LABEL=${LABEL:-31}
MVCF=${MVCF:-mvcf}
MANIFEST=${MANIFEST:-$WORK/cohort/manifest.csv}

if [ ! -f "$MANIFEST" ]; then
  "$MVCF" synth --out "$WORK/cohort" --cases 80 --seed 0
fi

# One model: 2.5D orthogonal planes, one 60/20/20 split, the 'external' institution held out.
"$MVCF" train --manifest "$MANIFEST" --out "$WORK/train" --view 2.5d-orthogonal --epochs 10 --folds 1 \
  --external external --device auto
# Re-evaluate the bundle on a manifest (per-case CSV, metrics JSON with CIs, ROC/calibration PNGs).
"$MVCF" evaluate --model "$WORK/train/model" --manifest "$MANIFEST" --out "$WORK/evaluate"
# The paper's design: every view mode + the logistic baseline on identical splits, DeLong comparisons.
"$MVCF" study --manifest "$MANIFEST" --out "$WORK/study" --epochs 10 --folds 1 --external external

# Classify a folder: one JSON line per CT.
if [ -n "$CT_FOLDER" ]; then
  for ct in "$CT_FOLDER"/*.nii.gz; do
    case "$ct" in *_seg.nii.gz) continue ;; esac
    seg="${ct%.nii.gz}_seg.nii.gz"
    [ -f "$seg" ] || { echo "skipping $ct: no $seg" >&2; continue; }
    "$MVCF" predict --ct "$ct" --mask "$seg" --label "$LABEL" --model "$WORK/train/model" --json
  done > "$WORK/predictions.jsonl"
  echo "predictions: $WORK/predictions.jsonl"
fi
