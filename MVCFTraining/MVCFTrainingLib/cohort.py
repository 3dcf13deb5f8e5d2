"""Cohort manifest from the Slicer scene: volumes + a point list or segmentation per case -> manifest CSV.

Workflow in the module: `cohort_table_from_scene` lists every CT volume with the point list/segmentation
that belongs to it in an editable table node (one row per fractured vertebra); the user fills in label,
institution and patient in Slicer's table view; `save_manifest_from_table` checks every row (naming every
bad one), exports what is only in memory (CTs not loaded from a file the core can read), and writes the
manifest with `mvcf.manifest.write_manifest`, validated once more by `mvcf.manifest.read_manifest`.
Every function takes the scene explicitly (pytest drives it with slicer-core's real MRML).
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from MVCFClassifierLib.markups import locations_from_point_list, locations_from_segmentation, segment_labelmap
from MVCFClassifierLib.tables import table_rows, write_table
from MVCFClassifierLib.volumes import input_ct_from_volume_node
from mvcf.errors import MVCFError
from mvcf.fileio import atomic_path, write_errors
from mvcf.manifest import (CLASS_NAMES, CaseRecord, check_consistency, check_one_case_per_vertebra,
                           check_one_patient_per_scan, parse_label, read_manifest, write_manifest)
from mvcf.progress import CancelCheck, ProgressCallback, check_cancel

COHORT_COLUMNS = (
    ("case_id", str, "unique id of the case (one fractured vertebra)"),
    ("patient_id", str, "patient; all of a patient's cases stay in one split and one institution"),
    ("institution", str, "acquiring site; the external test set is chosen by this value"),
    ("label", str, "MVCF (malignant) or OVCF (osteoporotic), biopsy-proven"),
    ("volume", str, "name of the CT volume node"),
    ("location", str, "name of the markups point list or segmentation node marking the vertebra"),
    ("vertebra", str, "control point label or segment name (empty when the node has only one)"),
)
READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
POINT_CLASS = "vtkMRMLMarkupsFiducialNode"
SEGMENTATION_CLASS = "vtkMRMLSegmentationNode"
ATTRIBUTE_PREFIX = "MVCF."  # node attributes MVCF.label / MVCF.institution / MVCF.patient_id prefill the table


def _nodes(scene, class_name: str) -> list:
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def ct_volumes(scene) -> list:
    """Scalar volume nodes that are not label maps."""
    return [n for n in _nodes(scene, "vtkMRMLScalarVolumeNode") if not n.IsA("vtkMRMLLabelMapVolumeNode")]


def _location_nodes(scene) -> list:
    return _nodes(scene, POINT_CLASS) + _nodes(scene, SEGMENTATION_CLASS)


def _name_owner(node, volumes: list):
    """The volume whose name `node`'s name starts with, followed by a non-alphanumeric character or nothing
    ('CT7 points' belongs to 'CT7', not to 'CT'; 'CT17 points' not to 'CT1'); the longest such name wins."""
    name = node.GetName()
    owners = [v for v in volumes if name.startswith(v.GetName())
              and (len(name) == len(v.GetName()) or not name[len(v.GetName())].isalnum())]
    return max(owners, key=lambda v: len(v.GetName()), default=None)


def paired_locations(scene, volume) -> list:
    """Point lists / segmentations that belong to `volume`: a segmentation whose reference geometry is the
    volume, or a node named after the volume ('<volume name> points'); all of them when the scene holds
    one CT."""
    volumes = ct_volumes(scene)
    found = []
    for node in _location_nodes(scene):
        if node.IsA(SEGMENTATION_CLASS):
            reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
            if reference is not None:
                if reference is volume:
                    found.append(node)
                continue
        if _name_owner(node, volumes) is volume:
            found.append(node)
    if not found and len(volumes) == 1:
        found = _location_nodes(scene)
    return found


def _vertebrae(node) -> list[str]:
    if node.IsA(POINT_CLASS):
        try:
            return [location.name for location in locations_from_point_list(node)]
        except MVCFError:
            return []
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def cohort_table_from_scene(scene, node=None, name: str = "MVCF cohort"):
    """A table node with one row per marked vertebra of every CT in the scene, to be completed by the user.

    label / institution / patient_id come from the volume's `MVCF.label`, `MVCF.institution`,
    `MVCF.patient_id` attributes when set (scripts can set them), else stay empty (patient defaults to
    the volume name)."""
    rows = []
    for volume in ct_volumes(scene):
        attributes = {key: volume.GetAttribute(ATTRIBUTE_PREFIX + key) or ""
                      for key in ("label", "institution", "patient_id")}
        base = {"patient_id": attributes["patient_id"] or volume.GetName(),
                "institution": attributes["institution"], "label": attributes["label"],
                "volume": volume.GetName()}
        entries = [(loc, v) for loc in paired_locations(scene, volume) for v in (_vertebrae(loc) or [""])]
        for index, (location, vertebra) in enumerate(entries or [(None, "")], start=1):
            suffix = "" if len(entries) <= 1 else f"_{vertebra or index}"
            rows.append({**base, "case_id": volume.GetName() + suffix,
                         "location": location.GetName() if location is not None else "",
                         "vertebra": vertebra if location is not None and len(_vertebrae(location)) > 1 else ""})
    seen: dict[str, int] = defaultdict(int)
    for row in rows:  # keep case ids unique when two lists name the same vertebra
        seen[row["case_id"]] += 1
        if seen[row["case_id"]] > 1:
            row["case_id"] = f"{row['case_id']}_{seen[row['case_id']]}"
    table = write_table(scene, rows, COHORT_COLUMNS, name, node=node)
    table.SetAttribute("MVCF.role", "cohort")
    return table


def _find_node(scene, text: str, class_names: Sequence[str]):
    """A node by ID or by unique name among `class_names`; MVCFError when absent or ambiguous."""
    node = scene.GetNodeByID(text)
    if node is not None and any(node.IsA(c) for c in class_names):
        return node
    matches = [n for c in class_names for n in _nodes(scene, c) if n.GetName() == text]
    if not matches:
        raise MVCFError(f"no node named '{text}' in the scene")
    if len(matches) > 1:
        raise MVCFError(f"several nodes are named '{text}': rename them")
    return matches[0]


def location_center_lps(node, vertebra: str, volume) -> np.ndarray:
    """Centre (LPS mm, world) of the vertebra named `vertebra` (or of the only one) in a point list or a
    segmentation; a segment is read on the grid of `volume`, its CT."""
    names = _vertebrae(node)
    kind = "point list" if node.IsA(POINT_CLASS) else "segmentation"
    if not names:
        raise MVCFError(f"{kind} '{node.GetName()}' marks no vertebra")
    if vertebra and vertebra not in names:
        raise MVCFError(f"{kind} '{node.GetName()}' has no '{vertebra}' (has {', '.join(names)})")
    if not vertebra and len(names) > 1:
        raise MVCFError(f"{kind} '{node.GetName()}' marks {len(names)} vertebrae: name one in 'vertebra'")
    name = vertebra or names[0]
    if node.IsA(POINT_CLASS):
        locations = locations_from_point_list(node)
    else:
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(name)
        locations = locations_from_segmentation(node, [segment_id], volume)
    return next(location.center_lps for location in locations if location.name == name)


def _source_file(volume) -> Optional[Path]:
    """The file a volume was loaded from, when the core can read it and the node is unchanged since."""
    storage = volume.GetStorageNode()
    if storage is None or not storage.GetFileName() or volume.GetParentTransformNode() is not None:
        return None
    path = Path(storage.GetFileName())
    if not path.is_file() or not path.name.lower().endswith(READABLE_SUFFIXES):
        return None
    if volume.GetModifiedSinceRead():
        return None
    return path


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "volume"


def _write_nifti(image, target: Path) -> Path:
    import SimpleITK as sitk

    with write_errors(target), atomic_path(target) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return target


def _free_name(stem: str, suffix: str, taken: set[str]) -> str:
    """`stem + suffix`, or `stem-2 + suffix`, ... : a file name no other file of this export has (letter case
    aside), since `CT 1` and `CT_1`, or two volumes both named `CT`, give one safe name."""
    name, number = f"{stem}{suffix}", 1
    while name.casefold() in taken:
        number += 1
        name = f"{stem}-{number}{suffix}"
    taken.add(name.casefold())
    return name


def export_ct(volume, folder: Union[str, os.PathLike], taken: Optional[set[str]] = None) -> Path:
    """Write a volume node as NIfTI (LPS geometry, world transform applied) under `folder`, atomically;
    `taken`: the file names this export has given already (the new one is added)."""
    image = input_ct_from_volume_node(volume).to_sitk()
    name = _free_name(_safe_name(volume.GetName()), ".nii.gz", set() if taken is None else taken)
    return _write_nifti(image, Path(folder) / name)


def export_segment_mask(segmentation, vertebra: str, volume, target: Union[str, os.PathLike]) -> Path:
    """Write one segment as a 0/1 NIfTI mask on the CT's grid (label 1), so the core can use the mask
    itself (its centroid, and the body measures of the logistic baseline)."""
    names = _vertebrae(segmentation)
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(vertebra or names[0])
    mask = segment_labelmap(segmentation, segment_id, volume)
    return _write_nifti(mask.to_sitk(), Path(target))


@dataclass
class _Row:
    number: int
    values: dict
    volume: object = None
    location: object = None


def _check_rows(scene, rows: list[dict]) -> tuple[list[_Row], dict[int, list[str]]]:
    problems: dict[int, list[str]] = defaultdict(list)
    checked = []
    for number, values in enumerate(rows, start=1):
        values = {k: str(values.get(k, "") or "").strip() for k, _, _ in COHORT_COLUMNS}
        row = _Row(number, values)
        for key in ("case_id", "patient_id", "institution", "label", "volume", "location"):
            if not values[key]:
                problems[number].append(f"empty {key}")
        if values["label"]:
            try:
                parse_label(values["label"])
            except MVCFError as exc:
                problems[number].append(str(exc))
        if values["volume"]:
            try:
                row.volume = _find_node(scene, values["volume"], ["vtkMRMLScalarVolumeNode"])
            except MVCFError as exc:
                problems[number].append(f"volume: {exc}")
        if values["location"]:
            try:
                row.location = _find_node(scene, values["location"], [POINT_CLASS, SEGMENTATION_CLASS])
                if row.volume is not None:
                    location_center_lps(row.location, values["vertebra"], row.volume)
            except MVCFError as exc:
                problems[number].append(f"location: {exc}")
        checked.append(row)
    # the volume node's ID stands in for the CT file, which is only written on save
    records = [_record(r, Path(r.volume.GetID())) for r in checked if r.number not in problems]
    check_consistency(records, problems)
    check_one_patient_per_scan(records, problems, scan_of=lambda record: str(record.ct))
    check_one_case_per_vertebra(records, problems, scan_of=lambda record: str(record.ct))
    return checked, problems


def _row_messages(problems: dict[int, list[str]], rows: list[_Row]) -> list[str]:
    names = {r.number: r.values.get("case_id") for r in rows}
    return [f"row {n}{' (' + names[n] + ')' if names.get(n) else ''}: {', '.join(problems[n])}"
            for n in sorted(problems)]


def check_cohort_table(scene, table_node) -> list[str]:
    """Every problem of the cohort table, one string per bad row ('row 3 (case_7): empty label, ...')."""
    checked, problems = _check_rows(scene, table_rows(table_node))
    return _row_messages(problems, checked)


def _record(row: _Row, ct: Path, mask: Optional[Path] = None) -> CaseRecord:
    """A manifest record; a segmentation row written with its `mask` file, a point row with its centre."""
    values = row.values
    extra = {"vertebra": values["vertebra"]} if values["vertebra"] else {}
    record = CaseRecord(case_id=values["case_id"], patient_id=values["patient_id"],
                        institution=values["institution"], label=parse_label(values["label"]), ct=ct,
                        row=row.number, extra=extra)
    if mask is not None:
        record.mask, record.vertebra_label = mask, 1
    else:
        record.center_lps = location_center_lps(row.location, values["vertebra"], row.volume)
    return record


def save_manifest_from_table(scene, table_node, manifest_path: Union[str, os.PathLike],
                             on_progress: Optional[ProgressCallback] = None,
                             should_cancel: Optional[CancelCheck] = None) -> list[CaseRecord]:
    """Check the cohort table (one MVCFError naming every bad row), export CTs that exist only in the scene
    and segment masks to `<manifest folder>/images/`, write the manifest and read it back through the
    core's validation. Point-list rows get `center_lps`, segmentation rows `mask` + `vertebra_label` 1."""
    manifest_path = Path(manifest_path)
    rows = table_rows(table_node)
    if not rows:
        raise MVCFError("cohort table has no rows: add cases first")
    checked, problems = _check_rows(scene, rows)
    if problems:
        plural = "s" if len(problems) != 1 else ""
        raise MVCFError(f"cohort table: {len(problems)} bad row{plural}: "
                        + "; ".join(_row_messages(problems, checked)))

    images = manifest_path.parent / "images"
    volumes = list(dict.fromkeys(r.volume for r in checked))
    sources = {volume.GetID(): _source_file(volume) for volume in volumes}
    # no new file takes the name of one already there: an earlier export that another manifest names (a
    # second cohort's "A00" replaced the first's, which then trained on the other CT), or the user's own
    taken = {path.name.casefold() for path in images.iterdir()} if images.is_dir() else set()
    ct_paths: dict[str, Path] = {}
    segmented = [r for r in checked if r.location.IsA(SEGMENTATION_CLASS)]
    total = len(volumes) + len(segmented)
    for done, volume in enumerate(volumes):
        check_cancel(should_cancel)
        if on_progress:
            on_progress(done, total, f"exporting {volume.GetName()}")
        ct_paths[volume.GetID()] = sources[volume.GetID()] or export_ct(volume, images, taken)
    masks: dict[int, Path] = {}
    for done, row in enumerate(segmented, start=len(volumes)):
        check_cancel(should_cancel)
        if on_progress:
            on_progress(done, total, f"exporting the mask of {row.values['case_id']}")
        target = images / _free_name(f"{_safe_name(row.values['case_id'])}_mask", ".nii.gz", taken)
        masks[row.number] = export_segment_mask(row.location, row.values["vertebra"], row.volume, target)
    if on_progress:
        on_progress(total, total, "writing the manifest")
    records = [_record(r, ct_paths[r.volume.GetID()], masks.get(r.number)) for r in checked]
    # a CT loaded from elsewhere stays there (an absolute path): the user chose it in the scene
    with atomic_path(manifest_path) as tmp:
        write_manifest(tmp, records)
        try:
            read_manifest(tmp, allow_outside_root=True)
        except MVCFError as exc:
            raise MVCFError(str(exc).replace(tmp.name, manifest_path.name)) from None
    return read_manifest(manifest_path, allow_outside_root=True)


def manifest_summary(records: Sequence[CaseRecord]) -> str:
    """'24 cases, 12 patients; MVCF 10, OVCF 14; A 16, B 8' for the status line; a cohort of one class says
    that it can be evaluated on but not trained on (Train and Study refuse it only once their run starts)."""
    classes = defaultdict(int)
    sites = defaultdict(int)
    for record in records:
        classes[CLASS_NAMES[record.label]] += 1
        sites[record.institution] += 1
    patients = len({r.patient_id for r in records})
    present = [k for k in ("MVCF", "OVCF") if classes[k]]
    alone = (f" (only {present[0]} cases: enough to evaluate a model on, not to train one or run a study)"
             if len(present) == 1 else "")
    return (f"{len(records)} cases, {patients} patients; "
            + ", ".join(f"{k} {classes[k]}" for k in ("MVCF", "OVCF"))
            + "; " + ", ".join(f"{k} {v}" for k, v in sorted(sites.items())) + alone)


MANIFEST_TABLE_COLUMNS = (
    ("case_id", str, "case"), ("patient_id", str, "patient"), ("institution", str, "acquiring site"),
    ("label", str, "MVCF or OVCF"), ("ct", str, "CT file"), ("location", str, "mask:label or LPS centre (mm)"),
)


def manifest_table(scene, records: Sequence[CaseRecord], node=None, name: str = "MVCF manifest"):
    """Show a validated manifest in the scene (read-only view of what training will use)."""
    rows = []
    for r in records:
        location = (f"{r.mask.name}:{r.vertebra_label}" if r.mask is not None
                    else ",".join(f"{v:.1f}" for v in r.center_lps) if r.center_lps is not None else "")
        rows.append({"case_id": r.case_id, "patient_id": r.patient_id, "institution": r.institution,
                     "label": CLASS_NAMES[r.label], "ct": str(r.ct), "location": location})
    return write_table(scene, rows, MANIFEST_TABLE_COLUMNS, name, node=node)
