"""DICOM series the report/DICOM tests need, written into a temporary folder (the shared data stay read-only):
the real JPEG2000 series with new UIDs and identifiers, and the sample CT as a plain CT series."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IDENTIFIERS = {"PatientName": "Müller^Jürg", "PatientID": "PID-4711", "PatientBirthDate": "19670215",
               "AccessionNumber": "ACC-0815"}


def with_uids(source: Path, out: Path) -> Path:
    """A copy of the anonymised series (blank UIDs and patient fields) with new UIDs and identifiers, in
    UTF-8 so the non-ASCII name tests the character set."""
    import pydicom
    from pydicom.uid import generate_uid

    out.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber, ds.StudyID = study, series, 3, "S1"
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientSex = "M"
        for key, value in IDENTIFIERS.items():
            setattr(ds, key, value)
        ds.save_as(out / f"{path.name}.dcm")
    return out


def write_ct_series(ct, out: Path, name: str = "Sample^CT", patient_id: str = "SAMPLE-1") -> Path:
    """A CTImage as an uncompressed CT series (one file per k slice; LPS geometry kept)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rows, cols = ct.voxels.shape[1:]
    row_dir, col_dir = ct.direction[:, 0], ct.direction[:, 1]
    voxels = np.clip(np.asarray(ct.voxels), -1024, 3071).astype(np.int16)
    for k in range(ct.voxels.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID, ds.StudyID = "CT", name, patient_id, "1"
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "", ""
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", 1, k + 1
        ds.Manufacturer, ds.SeriesDescription, ds.ImageType = "test", "sample CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in ct.index_to_lps([0, 0, k])]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(ct.spacing[1]), float(ct.spacing[0])]
        ds.SliceThickness = float(ct.spacing[2])
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        ds.PixelData = voxels[k].tobytes()
        ds.save_as(out / f"{k:04d}.dcm", enforce_file_format=True)
    return out
