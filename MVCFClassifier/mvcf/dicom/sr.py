"""The results as a DICOM Comprehensive 3D SR following TID 1500 (Measurement Report), built with highdicom.

One measurement group (TID 1501) per classified vertebra: tracking identifier (its name and a new UID),
finding site (SNOMED CT code of the vertebral level, else 'Vertebra'), the algorithm identification (model
name, version, sha256), the source image nearest the vertebra's centre, and
    measurements:  probability of malignancy (DCM 111047 'Probability of cancer', unitless), the frozen
                   threshold (DCM 122411 'Threshold Value'), and when present the anterior, middle and
                   posterior body heights (mm) and the mean trabecular attenuation (DCM 112031, HU);
    evaluations:   the call (SCT 278201002 'Classification' = SCT 'Malignant' for MVCF / 'Benign' for OVCF)
                   and when present the Genant grade.
Concepts with no standard code (body heights by wall, Genant grade, the fracture finding type) use the
private coding scheme 99MVCF, which the file declares. The research-use notice travels in the document itself
(TID 1500's report-level Qualitative Evaluations, a TEXT "Comment"), so an SR viewer that shows the
probabilities shows it too. Every instance of the source series is listed as
evidence (the optional image library is left out: with a few hundred slices it multiplies the build time
and the file size for nothing a viewer needs).
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.dicom.source import DicomSource, need

PRIVATE_SCHEME = "99MVCF"
MANUFACTURER = "MVCFClassifier (research software)"
_LEVEL = re.compile(r"^(?:vertebrae[_ ])?([CTL])(\d{1,2})$|^(?:vertebrae[_ ])?(S1?|sacrum)$", re.IGNORECASE)
HEIGHTS = (("height_anterior_mm", "AVBH", "Anterior vertebral body height"),
           ("height_middle_mm", "MVBH", "Middle vertebral body height"),
           ("height_posterior_mm", "PVBH", "Posterior vertebral body height"))
GENANT_MEANING = {0: "Genant grade 0 (normal)", 1: "Genant grade 1 (mild)", 2: "Genant grade 2 (moderate)",
                  3: "Genant grade 3 (severe)"}


def private(value: str, meaning: str):
    hd = need("highdicom")
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


def level_name(result: dict[str, Any]) -> Optional[str]:
    """'L1', 'T12', 'S1'... from the result's `level` or `name`, or None when neither is a vertebral level."""
    for text in (result.get("level"), result.get("name")):
        match = _LEVEL.match(str(text or "").strip())
        if match and match.group(1):
            return f"{match.group(1).upper()}{int(match.group(2))}"
        if match:
            return "S1"
    return None


def level_code(result: dict[str, Any]):
    """SNOMED CT code of the vertebral level (pydicom's concept dictionary), 'Vertebra' when unknown."""
    from pydicom.sr.codedict import codes

    level = level_name(result)
    limits = {"C": 7, "T": 12, "L": 5}
    if level == "S1":
        return codes.SCT.Sacrum
    if level and 1 <= int(level[1:]) <= limits[level[0]]:
        return getattr(codes.SCT, f"{level}Vertebra")
    return codes.SCT.Vertebra


def _group(hd, codes, result: dict[str, Any], source: DicomSource, algorithm):
    unitless = hd.sr.CodedConcept("1", "UCUM", "no units")
    mm = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    site = hd.sr.FindingSite(anatomic_location=level_code(result))
    classified = result.get("probability_malignant") is not None
    measurements = [
        hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=float(result["probability_malignant"]),
                          unit=unitless, algorithm_id=algorithm),
        hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(result["threshold"]), unit=unitless,
                          algorithm_id=algorithm),
    ] if classified else []
    for key, value, meaning in HEIGHTS:
        if result.get(key) is not None:
            measurements.append(hd.sr.Measurement(name=private(value, meaning), value=float(result[key]), unit=mm,
                                                  algorithm_id=algorithm))
    if result.get("trabecular_hu") is not None:
        measurements.append(hd.sr.Measurement(
            name=codes.DCM.AttenuationCoefficient, value=float(result["trabecular_hu"]),
            unit=hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"), derivation=codes.SCT.Mean,
            algorithm_id=algorithm))
    call = codes.SCT.Malignant if result.get("prediction") == "MVCF" else codes.SCT.Benign
    evaluations = [hd.sr.QualitativeEvaluation(name=codes.SCT.Classification, value=call)] if classified else []
    if result.get("genant_grade") is not None:
        grade = int(result["genant_grade"])
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=private("GENANT", "Genant semiquantitative fracture grade"),
            value=private(f"GENANT{grade}", GENANT_MEANING.get(grade, f"Genant grade {grade}"))))
    if not measurements and not evaluations:
        return None
    nearest = source.nearest_instance(result["center_lps"]) if result.get("center_lps") is not None else None
    name = str(result.get("level") or result.get("name") or "vertebra")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=name[:64]),
        finding_type=_finding_type(result), algorithm_id=algorithm,
        finding_sites=[site], measurements=measurements, qualitative_evaluations=evaluations,
        source_images=None if nearest is None else
        [hd.sr.SourceImageForMeasurementGroup(str(nearest.SOPClassUID), str(nearest.SOPInstanceUID))])


def _finding_type(result: dict[str, Any]) -> Any:
    """A vertebra the user named as fractured (predict), or one the screen graded >= 1, is a compression
    fracture; every other screened level is a vertebra assessed, not a fracture (it read "L1: vertebral
    compression fracture ... Genant grade 0 (normal)")."""
    if "genant_grade" not in result or (result.get("genant_grade") or 0) >= 1:
        return private("VCF", "Vertebral compression fracture")
    return private("VERT", "Vertebra screened for compression fracture")


def _notice(hd, codes, disclaimer: str):
    """TID 1500 row 12: a report-level Qualitative Evaluations container holding the notice as free text."""
    item = hd.sr.TextContentItem(name=codes.DCM.Comment, value=disclaimer[:1024],
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence([item])
    return container


def build_sr(source: DicomSource, results: Sequence[dict[str, Any]], model: dict[str, str],
             series_number: int = 901, software_version: str = "", disclaimer: str = RESEARCH_USE_DISCLAIMER):
    """A Comprehensive3DSR (pydicom Dataset) for the vertebrae of `results`, in a new series of the source's
    study: errors and rows with neither a probability nor a measurement are skipped; a screened row without
    a probability (not classified) keeps its measurements. `disclaimer` goes into the content tree."""
    hd = need("highdicom")
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(name=str(model["name"])[:64], version=str(model["version"])[:64],
                                              parameters=[f"sha256={model['sha256']}"])
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="mvcf", manufacturer_name=MANUFACTURER, model_name=str(model["name"])[:64]))
    groups = [g for g in (_group(hd, codes, r, source, algorithm) for r in results if "error" not in r)
              if g is not None]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    report[0].ContentSequence.append(_notice(hd, codes, disclaimer))
    sr = hd.sr.Comprehensive3DSR(
        evidence=source.evidence(), content=report, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description="MVCF classification (research use)", software_versions=software_version or None)
    return finish(sr)


def finish(ds):
    """What every output gets: UTF-8 character set (names in any script survive) and the private scheme."""
    from pydicom.dataset import Dataset

    ds.SpecificCharacterSet = "ISO_IR 192"
    if "ContentSequence" in ds:
        scheme = Dataset()
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = "MVCFClassifier private codes"
        scheme.CodingSchemeResponsibleOrganization = "MVCFClassifier project"
        ds.CodingSchemeIdentificationSequence = [scheme]
    return ds
