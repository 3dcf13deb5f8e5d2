"""The module's DICOM output (MVCFClassifierLib.dicom_export through logic.PredictionLogic): the CT volume's
source series from the DICOM database -> the child's --dicom-source -> SR, key images and heatmaps back into
the database.

slicer-core has MRML but no ctkDICOMDatabase (that is CTK's Qt/SQLite library, part of the Slicer
application only), so the database is a small stand-in implementing just the calls the logic makes:
`isOpen`, `fileForInstance(uid)` and `insert(path, storeFile, generateThumbnail)`, which, like CTK with
storeFile, keeps its own copy of each inserted file. The end-to-end test gives it a real DICOM series written
by the test and a real `mvcf predict` child writes the SR/SC/Parametric Map it then receives.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pip install 'mvcf[dicom]') is not installed")
pytest.importorskip("highdicom", reason="the dicom extra (pip install 'mvcf[dicom]') is not installed")

from conftest import shared  # noqa: E402
from dicom_fixtures import with_uids  # noqa: E402
from mvcf.errors import MVCFError  # noqa: E402
from MVCFClassifierLib import dicom_export, logic, volumes  # noqa: E402

BODY_IJK = (240, 322, 10)   # the vertebral body in the real series (512 x 512 x 20)


class StandInDatabase:
    """ctkDICOMDatabase's calls used by the logic, over a dict {SOP Instance UID: file}."""

    def __init__(self, folder: Path, files=()) -> None:
        self.folder = folder
        self.files: dict[str, str] = {}
        self.inserted: list[str] = []
        self.isOpen = True
        for path in files:
            self.files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = str(path)

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")

    def insert(self, path: str, storeFile: bool = True, generateThumbnail: bool = True) -> None:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        stored = path
        if storeFile:
            stored = str(self.folder / f"{ds.SOPInstanceUID}.dcm")
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, stored)
        self.files[str(ds.SOPInstanceUID)] = stored
        self.inserted.append(stored)


class NoChildLogic(logic.PredictionLogic):
    """Fails the test if a child would start or a package question would be asked."""

    def __init__(self, database, tmp_path: Path) -> None:
        super().__init__(python_executable=sys.executable, temp_root=str(tmp_path),
                         ensure_dependencies=self._never, ensure_dicom_dependencies=self._never,
                         dicom_database=lambda: database)

    @staticmethod
    def _never() -> bool:
        raise AssertionError("asked to install packages")

    def command(self, args):
        raise AssertionError("a child was started")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return with_uids(shared("totalsegmentator/example_ct_dicom"), tmp_path_factory.mktemp("dicom") / "ct")


def _loaded_from_dicom(scene, folder: Path, with_attribute: bool = True):
    """The series as Slicer's DICOMScalarVolumePlugin leaves it: a volume node whose DICOM.instanceUIDs
    attribute lists its slices' SOP Instance UIDs, and a point on the vertebral body."""
    from mvcf.read_ct import read_ct

    ct = read_ct(folder)
    node = volumes.volume_node_from_ct_image(scene, ct, "CT from DICOM")
    if with_attribute:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
        headers.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        node.SetAttribute("DICOM.instanceUIDs", " ".join(str(ds.SOPInstanceUID) for ds in headers))
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "vertebrae")
    points.AddControlPoint(vtk.vtkVector3d(*(ct.index_to_lps(np.array(BODY_IJK, float)) * [-1, -1, 1])), "L1")
    return node, points


def test_a_volume_not_from_dicom_gets_one_clear_message_and_no_child(series, tmp_path):
    scene = slicer.vtkMRMLScene()
    node, points = _loaded_from_dicom(scene, series, with_attribute=False)
    database = StandInDatabase(tmp_path / "db", sorted(series.iterdir()))
    with pytest.raises(MVCFError, match="needs a CT loaded from Slicer's DICOM database: 'CT from DICOM' has no "
                                        "DICOM instance UIDs"):
        NoChildLogic(database, tmp_path).apply(node, "Point list", points=points, dicom=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("mvcf-")]
    assert not database.inserted


def test_missing_database_or_files_are_refused_before_anything_runs(series, tmp_path):
    scene = slicer.vtkMRMLScene()
    node, points = _loaded_from_dicom(scene, series)
    files = sorted(series.iterdir())
    closed = StandInDatabase(tmp_path / "db", files)
    closed.isOpen = False
    with pytest.raises(MVCFError, match="DICOM database, which is not open"):
        NoChildLogic(closed, tmp_path).apply(node, "Point list", points=points, dicom=True)
    with pytest.raises(MVCFError, match="DICOM database, which is not open"):
        NoChildLogic(None, tmp_path).apply(node, "Point list", points=points, dicom=True)
    partial = StandInDatabase(tmp_path / "db", files[:-2])
    with pytest.raises(MVCFError, match="2 of the 20 DICOM instances of 'CT from DICOM' are no longer"):
        NoChildLogic(partial, tmp_path).apply(node, "Point list", points=points, dicom=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("mvcf-")]


def test_stage_links_exactly_the_series_files(series, tmp_path):
    scene = slicer.vtkMRMLScene()
    node, _ = _loaded_from_dicom(scene, series)
    export = dicom_export.DicomExport.prepare(node, StandInDatabase(tmp_path / "db", sorted(series.iterdir())),
                                              str(tmp_path))
    staged = sorted(export.source.iterdir())
    assert len(staged) == 20 and {p.resolve() for p in staged} == {p.resolve() for p in series.iterdir()}
    assert export.arguments() == ["--dicom-out", str(export.out), "--dicom-source", str(export.source)]
    export.cleanup()
    assert not export.root.exists() and len(list(series.iterdir())) == 20


def test_predict_in_slicer_adds_sr_sc_and_parametric_map_to_the_database(series, tmp_path):
    """A real child: the volume's source series found through the database, the new series (same study,
    referencing the source instances) inserted into it, the temporary folders removed."""
    scene = slicer.vtkMRMLScene()
    node, points = _loaded_from_dicom(scene, series)
    database = StandInDatabase(tmp_path / "db", sorted(series.iterdir()))
    source = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series.iterdir()}
    study = str(pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    run_logic = logic.PredictionLogic(python_executable=sys.executable, temp_root=str(tmp_path),
                                      dicom_database=lambda: database)
    outputs = run_logic.process(node, points=points, device="cpu", views=False, heatmap=False, dicom=True)
    assert outputs.rows[0]["status"] == "ok", outputs.rows
    added = outputs.dicom.added
    assert added.get("Comprehensive 3D SR") == 1 and added.get("Parametric Map") == 1, added
    assert added.get("Secondary Capture Image", 0) >= 1, added
    assert not outputs.dicom.refused and outputs.dicom.study_uid == study
    assert "Added to the DICOM database: " in logic.dicom_summary(outputs)
    new = [pydicom.dcmread(p) for p in database.inserted]
    assert len(new) == sum(added.values()) and all(str(ds.StudyInstanceUID) == study for ds in new)
    assert all(Path(p).parent == tmp_path / "db" for p in database.inserted)
    sr = next(ds for ds in new if ds.Modality == "SR")
    referenced = {str(item.ReferencedSOPInstanceUID)
                  for study_item in sr.CurrentRequestedProcedureEvidenceSequence
                  for series_item in study_item.ReferencedSeriesSequence
                  for item in series_item.ReferencedSOPSequence}
    assert referenced and referenced <= source
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("mvcf-")]


def test_slicer_pydicom_older_than_3_is_refused_not_replaced():
    with pytest.raises(MVCFError, match="needs pydicom 3 .* this Slicer has pydicom 2.4.4, .* not replaced"):
        dicom_export.check_pydicom("2.4.4")
    dicom_export.check_pydicom("3.0.2")


def test_the_whole_spine_screen_gets_the_dicom_arguments_and_cancel_removes_the_staged_series(series, tmp_path):
    from MVCFClassifierLib import screening
    from slicer_testing import register_segmentation_converters, segmentation_from_labels

    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    node, _ = _loaded_from_dicom(scene, series)
    labels = np.zeros((20, 512, 512), np.uint8)
    labels[5:15, 280:360, 200:280] = 1
    ijk_to_ras = np.eye(4)
    node.GetIJKToRASMatrix(matrix := vtk.vtkMatrix4x4())
    for r in range(4):
        for c in range(4):
            ijk_to_ras[r, c] = matrix.GetElement(r, c)
    segmentation, _ = segmentation_from_labels(scene, labels, ijk_to_ras, node, {1: "L1"})
    export = dicom_export.DicomExport.prepare(node, StandInDatabase(tmp_path / "db", sorted(series.iterdir())),
                                              str(tmp_path))
    run = screening.start_screen(node, segmentation, sys.executable, device="cpu", temp_root=str(tmp_path),
                                 dicom=export)
    assert run.command[-4:] == export.arguments() and run.dicom is export and "--heatmap-method" not in run.command
    run.cancel()
    assert not export.root.exists() and not run.workdir.exists()
    # the panel's heatmap method reaches the child with the DICOM output; torch only for Grad-CAM's
    from MVCFClassifierLib.logic import PredictionLogic

    database = StandInDatabase(tmp_path / "db", sorted(series.iterdir()))
    calls: list = []
    logic = PredictionLogic(temp_root=str(tmp_path), dicom_database=lambda: database,
                            ensure_dicom_dependencies=lambda **kw: calls.append(kw) or False)
    for method in ("gradcam", "occlusion"):
        assert logic.apply_screen(node, segmentation, device="cpu", dicom=True, heatmap_method=method) is None
    assert calls == [{"torch": True}, {"torch": False}]
    export = dicom_export.DicomExport.prepare(node, database, str(tmp_path))
    run = screening.start_screen(node, segmentation, sys.executable, device="cpu", temp_root=str(tmp_path),
                                 dicom=export, heatmap_method="occlusion")
    command = run.command
    run.cancel()
    assert command[command.index("--heatmap-method") + 1] == "occlusion" and command[-4:] == export.arguments()
