"""DICOM output from Slicer: the CT volume's source series, found through Slicer's DICOM database, goes to the
child run as `--dicom-source`; the SR, key images (Secondary Capture) and heatmaps (Parametric Map) it writes
into `--dicom-out` are then added to that database, next to the source study.

Slicer's DICOM plugins record in the volume node's attribute `DICOM.instanceUIDs` the SOP Instance UIDs of its
slices, space separated. The database (`ctkDICOMDatabase`, `slicer.dicomDatabase`) maps a UID to its file
(`fileForInstance`, '' when unknown) and stores a new file (`insert(path, storeFile, generateThumbnail)`, which
returns nothing; `fileForInstance` afterwards tells whether it took the file). Only these calls and the
`isOpen` property are used, so the tests run this module against a small stand-in database.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mvcf.errors import MVCFError

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
#: What the child needs for --dicom-out beyond the core's requirements (the core's `dicom` extra, without the
#: PACS clients). Slicer 5.12 ships pydicom 3.0.2 and highdicom 0.27.0, so only highdicom is installed.
DICOM_REQUIREMENTS = ("highdicom>=0.28,<0.29",)
#: The core writes with pydicom 3. Slicer 5.4-5.10 ship pydicom 2.4, and some of their DICOM modules call
#: `pydicom.read_file` (gone in pydicom 3: DICOMPatcher, DICOMImageSequencePlugin in 5.4), so Slicer's copy
#: is never replaced: DICOM output there is refused with a message.
PYDICOM_REQUIREMENT = "pydicom>=3.0,<4"


def check_pydicom(installed: Optional[str] = None) -> None:
    """An MVCFError when Slicer's pydicom is older than the core's DICOM output needs (it is not replaced)."""
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    if installed is None:
        try:
            installed = importlib.metadata.version("pydicom")
        except importlib.metadata.PackageNotFoundError:
            return  # none at all: installed with highdicom
    if installed not in SpecifierSet(PYDICOM_REQUIREMENT.split("pydicom", 1)[1]):
        raise MVCFError(f"DICOM output needs pydicom 3 (Slicer 5.12 and later ship it); this Slicer has pydicom "
                        f"{installed}, which its own DICOM modules need, so it is not replaced. Use Slicer 5.12 "
                        f"or later, or `mvcf predict --dicom-out` from the command line")


def source_uids(volume_node) -> list[str]:
    """The SOP Instance UIDs of the volume's slices, or an MVCFError when it was not loaded from DICOM."""
    text = volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) if volume_node is not None else None
    uids = list(dict.fromkeys((text or "").split()))
    if not uids:
        name = volume_node.GetName() if volume_node is not None else "(none)"
        raise MVCFError(f"DICOM output needs a CT loaded from Slicer's DICOM database: '{name}' has no DICOM "
                        f"instance UIDs (loaded from a NIfTI/NRRD file?). Import the CT series in the DICOM "
                        f"module and load it from there, or untick the DICOM output")
    return uids


def source_files(volume_node, database) -> list[Path]:
    """The files of the volume's source series, from the DICOM database (one per instance, duplicates of a
    multi-frame file once)."""
    uids = source_uids(volume_node)
    if database is None or not getattr(database, "isOpen", False):
        raise MVCFError("DICOM output needs Slicer's DICOM database, which is not open: open the DICOM module "
                        "once and choose a database folder")
    files, missing = [], []
    for uid in uids:
        path = str(database.fileForInstance(uid) or "")
        if not path or not Path(path).is_file():
            missing.append(uid)
        elif Path(path) not in files:
            files.append(Path(path))
    if missing:
        raise MVCFError(f"{len(missing)} of the {len(uids)} DICOM instances of '{volume_node.GetName()}' are no "
                        f"longer in the DICOM database or on disk (e.g. {missing[0]}): re-import the series")
    return files


def stage(files: list[Path], folder: Path) -> Path:
    """A folder holding just these files, as `--dicom-source` wants one series folder: symbolic links, else
    hard links, else copies (Windows without the symlink privilege; another drive)."""
    folder.mkdir(parents=True)
    for index, path in enumerate(files):
        target = folder / f"{index:05d}_{path.name}"
        for link in (os.symlink, os.link, shutil.copy2):
            try:
                link(path, target)
                break
            except OSError:
                if link is shutil.copy2:
                    raise
    return folder


@dataclass
class DicomImport:
    """What one run added to the DICOM database: the new instances by kind (SOP class name), and the files
    it refused."""

    added: dict[str, int] = field(default_factory=dict)
    study_uid: str = ""
    refused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.added and not self.refused:
            return "No DICOM output was written (no vertebra was classified)."
        parts = [f"{count} x {kind}" for kind, count in sorted(self.added.items())]
        text = f"Added to the DICOM database: {', '.join(parts) or 'nothing'}."
        if self.refused:
            text += f" The database refused {len(self.refused)} file(s): {', '.join(self.refused[:3])}."
        return text


class DicomExport:
    """One run's DICOM output: a temporary folder with the staged source series (`source`) and the child's
    `--dicom-out` (`out`). `arguments()` go on the child's command line; `import_results()` adds what it
    wrote to the database; `cleanup()` removes the folder (the database keeps its own copies)."""

    def __init__(self, database, source: Path, out: Path, root: Path) -> None:
        self.database = database
        self.source = source
        self.out = out
        self.root = root

    @classmethod
    def prepare(cls, volume_node, database, temp_root: Optional[str] = None) -> "DicomExport":
        """Find the volume's source series in the database and stage it; an MVCFError (nothing written, no
        child started) when the volume is not from DICOM or its files are gone."""
        files = source_files(volume_node, database)
        root = Path(tempfile.mkdtemp(prefix="mvcf-dicom-", dir=temp_root))
        try:
            source = stage(files, root / "source")
        except OSError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise MVCFError(f"cannot stage the DICOM source series: {exc.strerror or exc}") from None
        return cls(database, source, root / "out", root)

    def arguments(self) -> list[str]:
        return ["--dicom-out", str(self.out), "--dicom-source", str(self.source)]

    def import_results(self) -> DicomImport:
        """Insert every DICOM file the child wrote (stored as copies in the database's own folder), check
        each is there afterwards, and remove the temporary folder."""
        import pydicom

        result = DicomImport()
        try:
            for path in sorted(self.out.glob("*.dcm")) if self.out.is_dir() else []:
                header = pydicom.dcmread(path, stop_before_pixels=True)
                self.database.insert(str(path), True, False)
                if self.database.fileForInstance(str(header.SOPInstanceUID)):
                    kind = header.SOPClassUID.name.replace(" Storage", "")
                    result.added[kind] = result.added.get(kind, 0) + 1
                    result.study_uid = str(header.StudyInstanceUID)
                else:
                    result.refused.append(path.name)
        finally:
            self.cleanup()
        return result

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

