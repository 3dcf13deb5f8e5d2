"""The heatmap (Grad-CAM or occlusion, labelled as such) as a DICOM Parametric Map (highdicom), one per vertebra
in one new series of the source study: float values 0..1 on the heatmap's own grid, placed in the source's
frame of reference so a viewer overlays it on the CT. Content qualification RESEARCH."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mvcf.dicom.source import DicomSource, need
from mvcf.dicom.sr import MANUFACTURER, finish


def _volume(hd, heat, frame_of_reference_uid):
    """highdicom Volume of a CTImage: its array axes are (slice k, row j, column i)."""
    affine = np.eye(4)
    for axis, column in enumerate((2, 1, 0)):
        affine[:3, axis] = heat.direction[:, column] * heat.spacing[column]
    affine[:3, 3] = heat.origin
    return hd.Volume(np.ascontiguousarray(heat.voxels, dtype=np.float32), affine, coordinate_system="PATIENT",
                     frame_of_reference_uid=frame_of_reference_uid)


def build_pm(source: DicomSource, heats: Sequence[tuple[Any, str]], model: dict[str, str],
             software_version: str, series_number: int = 903) -> list[Any]:
    """`heats`: (heatmap CTImage, vertebra name) pairs -> Parametric Map Datasets, one series."""
    hd = need("highdicom")

    from mvcf.explain import METHOD_LABELS, method_of

    series_uid = hd.UID()
    out = []
    for number, (heat, name) in enumerate(heats, start=1):
        method = method_of(heat)
        label, what = method.upper(), METHOD_LABELS[method]
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=label, lut_explanation=f"{what} evidence for the call, relative (0-1)",
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"), value_range=(0.0, 1.0), slope=1.0, intercept=0.0)
        pm = hd.pm.ParametricMap(
            source_images=source.datasets, pixel_array=_volume(hd, heat, source.frame_of_reference_uid),
            series_instance_uid=series_uid, series_number=series_number, sop_instance_uid=hd.UID(),
            instance_number=number, manufacturer=MANUFACTURER, manufacturer_model_name=str(model["name"])[:64],
            software_versions=software_version[:64], device_serial_number=str(model["sha256"])[:64],
            contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
            content_label=label, content_description=f"{what} heatmap of {name} (research use)"[:64])
        measures = pm.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        if measures.get("SliceThickness") in (None, ""):   # a source without one: the map's own sampling step
            measures.SliceThickness = float(heat.spacing[2])
        pm.SeriesDescription = "MVCF heatmaps (research use)"
        pm.Laterality = ""  # Type 2C: the spine is not a paired structure
        out.append(finish(pm))
    return out
