"""Key images as DICOM Secondary Capture (true-colour RGB, burned-in annotations) in one new series of the
source study, built with highdicom from the source's patient and study attributes; each references the
source instance nearest the vertebra's centre."""
from __future__ import annotations

from typing import Any, Sequence

from mvcf.dicom.source import DicomSource, need
from mvcf.dicom.sr import MANUFACTURER, finish


def build_sc(source: DicomSource, images: Sequence[tuple[Any, Sequence[float]]], series_number: int = 902,
             comment: str = "") -> list[Any]:
    """`images`: (mvcf.report.images.KeyImage, centre LPS mm) pairs -> SC Datasets, one series."""
    hd = need("highdicom")
    from pydicom.dataset import Dataset

    series_uid = hd.UID()
    out = []
    for number, (image, center_lps) in enumerate(images, start=1):
        nearest = source.nearest_instance(center_lps)
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source.first, pixel_array=image.rgb, photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=number, manufacturer=MANUFACTURER,
            patient_orientation=tuple(image.orientation), transfer_syntax_uid="1.2.840.10008.1.2.1")
        sc.SeriesDescription = "MVCF key images (research use)"
        sc.BurnedInAnnotation = "YES"
        sc.Laterality = ""  # Type 2C: the spine is not a paired structure
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.DerivationDescription = f"{image.caption}; {image.overlay} overlay"[:1024]
        sc.ImageComments = comment[:10240]
        reference = Dataset()
        reference.ReferencedSOPClassUID = nearest.SOPClassUID
        reference.ReferencedSOPInstanceUID = nearest.SOPInstanceUID
        sc.SourceImageSequence = [reference]
        out.append(finish(sc))
    return out
