#!/usr/bin/env python3
"""Batch classification: a folder of CTs, each with its vertebrae marked, -> one TSV of results.

Inside 3D Slicer (the extension installed):

    Slicer --no-main-window --python-script scripts/slicer_batch_classify.py --cases DIR --out results.tsv

or with plain Python where `slicer-core` is installed (`pip install -e ".[test]"`):

    python scripts/slicer_batch_classify.py --cases DIR --out results.tsv

For each CT `DIR/<case>.nii.gz` (also .nii, .nrrd, .mha) the vertebrae come from `DIR/<case>.mrk.json` (a Slicer
point list: one point per vertebra, labelled by level) or from a label mask `DIR/<case>_seg.nii.gz` (e.g.
TotalSegmentator output) with `--labels L1=31,L2=30`. Both go through MVCFClassifierLogic's batch path, so the
TSV has the module's result columns plus `case`. Research use only.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
MASK_TAGS = ("_seg", "_mask")


@dataclass
class Case:
    name: str
    ct: Path
    points: Optional[Path] = None
    mask: Optional[Path] = None


def _split(path: Path) -> tuple[str, str]:
    for suffix in IMAGE_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)], suffix
    return path.name, ""


def find_cases(folder: Path) -> list[Case]:
    """Every CT of `folder` with the point list or label mask beside it (neither: the case is still listed,
    so the TSV says what was missing)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"error: --cases {folder} is not a folder")
    images = {}
    for path in sorted(folder.iterdir()):
        stem, suffix = _split(path)
        if suffix and not path.name.endswith(".seg.nrrd"):
            images[stem] = path
    cases = []
    for stem, path in images.items():
        if stem.endswith(MASK_TAGS):
            continue
        mask = next((images[stem + tag] for tag in MASK_TAGS if stem + tag in images), None)
        points = folder / f"{stem}.mrk.json"
        cases.append(Case(stem, path, points if points.is_file() else None, mask))
    return cases


def parse_labels(text: str) -> dict[str, int]:
    """'L1=31,L2=30' -> {'L1': 31, 'L2': 30}; a bare number names the segment 'label N'."""
    labels = {}
    for item in (t.strip() for t in (text or "").split(",") if t.strip()):
        name, _, value = item.rpartition("=")
        try:
            labels[name or f"label {value}"] = int(value)
        except ValueError:
            raise SystemExit(f"error: --labels items are NAME=VALUE or VALUE, got {item!r}") from None
    return labels


def classify_case(scene, logic, case: Case, labels: dict[str, int], model: Optional[str], device: str,
                  heatmap: bool) -> list[dict]:
    """Rows for one case; its nodes are removed afterwards so a long batch does not fill the memory."""
    import slicer

    from mvcf.errors import MVCFError
    from mvcf.read_ct import read_ct, read_mask
    from MVCFClassifierLib import markups, volumes

    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        ct_node = volumes.volume_node_from_ct_image(scene, read_ct(case.ct), case.name)
        if case.points is not None:
            points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{case.name} vertebrae")
            storage = slicer.vtkMRMLMarkupsJsonStorageNode()
            scene.AddNode(storage)
            storage.SetFileName(str(case.points))
            if not storage.ReadData(points):
                raise MVCFError(f"cannot read the point list {case.points}")
            outputs = logic.process(ct_node, points=points, model_dir=model, device=device, views=False,
                                    heatmap=heatmap)
        elif case.mask is not None:
            if not labels:
                raise MVCFError("a label mask needs --labels, e.g. --labels L1=31")
            segmentation, ids = markups.segmentation_from_label_mask(scene, read_mask(case.mask), labels, ct_node)
            outputs = logic.process(ct_node, segmentation=segmentation, segment_ids=ids, model_dir=model,
                                    device=device, views=False, heatmap=heatmap)
        else:
            raise MVCFError(f"no {case.name}.mrk.json or {case.name}_seg mask beside the CT")
        return [{"case": case.name, **row} for row in outputs.rows]
    except MVCFError as exc:
        return [{"case": case.name, "status": f"error: {exc}"}]
    finally:
        for i in reversed(range(scene.GetNumberOfNodes())):
            node = scene.GetNthNode(i)
            if node is not None and node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, help="folder of CTs with <case>.mrk.json or <case>_seg masks")
    parser.add_argument("--out", required=True, help="output .tsv (a .schema.tsv with column types and "
                        "descriptions is written beside it)")
    parser.add_argument("--labels", default="", help="mask label values to classify, e.g. L1=31,L2=30")
    parser.add_argument("--model", help="model bundle folder (default: the embedded demo model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--heatmap", action="store_true", help="also compute heatmaps (slower; not in the TSV)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "MVCFClassifier"))
    import slicer

    from MVCFClassifierLib import tables
    from MVCFClassifierLib.logic import RESULT_COLUMNS, PredictionLogic

    scene = slicer.mrmlScene if getattr(slicer, "mrmlScene", None) is not None else slicer.vtkMRMLScene()
    logic = PredictionLogic()
    labels = parse_labels(args.labels)
    rows = []
    cases = find_cases(Path(args.cases))
    for index, case in enumerate(cases, start=1):
        print(f"[{index}/{len(cases)}] {case.name}", flush=True)
        rows += classify_case(scene, logic, case, labels, args.model, args.device, args.heatmap)
    columns = [("case", str, "Case: the CT file name without its extension"), *RESULT_COLUMNS]
    table = tables.write_table(scene, rows, columns, "MVCF batch results")
    written = tables.save_table_tsv(table, args.out)
    scene.RemoveNode(table)
    failed = sum(1 for row in rows if row.get("status") != "ok")
    print(f"{len(rows)} row(s), {failed} without a prediction -> {written[0]}")
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    import slicer

    if hasattr(slicer, "app"):  # inside Slicer: leave the application, or it keeps running headless
        slicer.util.exit(code)
    else:
        sys.exit(code)
