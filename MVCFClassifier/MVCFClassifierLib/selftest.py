"""The module's end-to-end self-test on the shipped sample CT (TotalSegmentator's example CT and its
vertebra mask): what Reload & Test runs inside Slicer, and what pytest runs on slicer-core.

A TotalSegmentator-style segmentation (segment IDs `vertebrae_L1`, `vertebrae_L2`, `vertebrae_T11`) goes
through the automatic vertebra selection: L1 and L2 are classified by the embedded demo model on the CPU
with heatmaps and model-input views; T11, cut by the top of the scan, is skipped and reported. A few
seconds after the packages are installed.
"""
from __future__ import annotations

from typing import Optional

SAMPLE_SEGMENTS = {"vertebrae_L1": "L1", "vertebrae_L2": "L2", "vertebrae_T11": "T11"}
EXPECTED_STATUS = {"L1": "ok", "L2": "ok", "T11": "skipped: cut by the edge of the CT"}


def load_sample(scene):
    """(CT volume node, segmentation node) of the sample CT in `scene`."""
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths
    from MVCFClassifierLib import markups, volumes

    paths = sample_ct_paths()
    ct_node = volumes.volume_node_from_ct_image(scene, read_ct(paths["ct"]), "MVCF sample CT")
    labels = {name: SAMPLE_VERTEBRA_LABELS[level] for name, level in SAMPLE_SEGMENTS.items()}
    segmentation, _ids = markups.segmentation_from_label_mask(scene, read_mask(paths["mask"]), labels, ct_node,
                                                              name="MVCF sample TotalSegmentator")
    return ct_node, segmentation


def problems(outputs) -> list[str]:
    """What is wrong with the self-test's outputs (empty when it passed)."""
    found = []
    statuses = {row["vertebra"]: row.get("status") for row in outputs.rows}
    if statuses != EXPECTED_STATUS:
        found.append(f"statuses {statuses}, expected {EXPECTED_STATUS}")
    for row in outputs.rows:
        if row.get("status") == "ok":
            probability = row.get("probability_malignant")
            if not (isinstance(probability, float) and 0.0 <= probability <= 1.0):
                found.append(f"{row['vertebra']}: probability {probability!r} is not in 0-1")
            if row.get("prediction") not in ("MVCF", "OVCF"):
                found.append(f"{row['vertebra']}: prediction {row.get('prediction')!r}")
    heatmaps = sorted(n.GetName() for n in outputs.volume_nodes if n.GetName().endswith("heatmap"))
    if heatmaps != ["L1 heatmap", "L2 heatmap"]:
        found.append(f"heatmap nodes {heatmaps}")
    if outputs.table_node is None or outputs.table_node.GetNumberOfRows() != len(EXPECTED_STATUS):
        found.append("the result table does not have one row per vertebra")
    return found


def run_self_test(scene, logic=None, device: str = "cpu", model_dir: Optional[str] = None):
    """Load the sample, classify its vertebrae in a child process, return (outputs, problems)."""
    from MVCFClassifierLib.logic import PredictionLogic

    logic = logic or PredictionLogic()
    ct_node, segmentation = load_sample(scene)
    outputs = logic.process(ct_node, segmentation=segmentation, source="Segmentation", device=device,
                            model_dir=model_dir, views=True, heatmap=True)
    return outputs, problems(outputs)
