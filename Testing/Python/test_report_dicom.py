"""Case report, DICOM SR/SC and PACS send on real inputs: the real JPEG2000 series (given UIDs by the test;
the blank original must be refused) and the sample CT written as a DICOM series, sent to a real Orthanc by
C-STORE and STOW-RS and checked through Orthanc's REST API."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import shared
from dicom_fixtures import IDENTIFIERS, with_uids, write_ct_series
from orthanc_server import CALLING_AET, free_port, start_orthanc, stop_orthanc

pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pip install 'mvcf[dicom]') is not installed")
hd = pytest.importorskip("highdicom", reason="the dicom extra (pip install 'mvcf[dicom]') is not installed")

from mvcf.cli.main import main  # noqa: E402

BODY_IJK = "240,322,10"   # the vertebral body in the real series (512 x 512 x 20)
REAL = "totalsegmentator/example_ct_dicom"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("report_dicom")


@pytest.fixture(scope="module")
def real_ct(work):
    return with_uids(shared(REAL), work / "real_ct")


@pytest.fixture(scope="module")
def orthanc(work):
    server = start_orthanc(work / "orthanc")
    yield server
    stop_orthanc(server)


def run(capsys, *argv):
    capsys.readouterr()
    code = main(["--progress", "none", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def real_run(work, real_ct):
    """One predict run on the real series with a report and DICOM output (shared by the tests below)."""
    import contextlib

    report, dicom = work / "real_report", work / "real_dicom"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--progress", "none", "predict", "--ct", str(real_ct), "--point-ijk", BODY_IJK, "--report",
                     str(report), "--dicom-out", str(dicom), "--json"])
    assert code == 0
    return {"report": report, "dicom": dicom, "payload": json.loads(out.getvalue()), "stdout": out.getvalue()}


def _objects(folder: Path):
    return {p.name.split("_")[0]: p for p in sorted(folder.glob("SR_*.dcm"))} | \
        {f"SC{i}": p for i, p in enumerate(sorted(folder.glob("SC_*.dcm")))}


def test_sr_and_sc_pass_dciodvfy(real_run):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    files = sorted(real_run["dicom"].glob("*.dcm"))
    assert len(files) == 4  # the SR, two key images, the heatmap
    for path in files:
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def _edited_copy(source: Path, out: Path, edit) -> Path:
    out.mkdir()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(out / path.name)
    return out


def test_a_japanese_series_without_slice_thickness_gets_valid_dicom_and_one_without_frame_gets_one_line(
        work, real_ct, capsys):
    """Three valid or common sources ended in a traceback (exit 1): ISO 2022 IR 87 (Japanese names, the first
    value empty: highdicom refused the character set it copied), no SliceThickness (Type 2 in a CT, so
    absent is legal), and no FrameOfReferenceUID (not a valid CT, so one line and exit 2)."""
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"

    def japanese(ds):
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = name
        del ds.SliceThickness
    source = _edited_copy(real_ct, work / "japanese_ct", japanese)
    assert b"\x1b$B" in next(source.iterdir()).read_bytes()            # written with ISO 2022 escapes
    out = work / "japanese_dicom"
    code, _, err = run(capsys, "predict", "--ct", source, "--point-ijk", BODY_IJK, "--dicom-out", out)
    assert code == 0, err
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 4
    for path in files:
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == name and ds.SpecificCharacterSet == "ISO_IR 192"
        if shutil.which("dciodvfy"):
            check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert not [x for x in (check.stdout + check.stderr).splitlines() if x.startswith("Error")], path.name

    def no_frame(ds):
        del ds.FrameOfReferenceUID
    source = _edited_copy(real_ct, work / "frameless_ct", no_frame)
    code, _, err = run(capsys, "predict", "--ct", source, "--point-ijk", BODY_IJK, "--dicom-out", work / "frameless")
    assert code == 2 and "FrameOfReferenceUID" in err and len(err.strip().splitlines()) == 1, err
    assert not (work / "frameless").exists()


def test_sr_reads_back_with_the_same_measurements_codes_and_references(real_run, real_ct):
    result = real_run["payload"]
    sr_path = next(real_run["dicom"].glob("SR_*.dcm"))
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(sr_path))
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(real_ct.iterdir())]
    assert sr.StudyInstanceUID == source[0].StudyInstanceUID
    assert sr.SeriesInstanceUID != source[0].SeriesInstanceUID
    assert str(sr.PatientName) == IDENTIFIERS["PatientName"] and sr.PatientID == IDENTIFIERS["PatientID"]
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID for ds in source}
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    from pydicom.sr.codedict import codes

    probability = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)[0]
    assert probability.value == pytest.approx(result["probability_malignant"])
    assert group.get_measurements(name=codes.DCM.ThresholdValue)[0].value == pytest.approx(result["threshold"])
    call = group.get_qualitative_evaluations(name=codes.SCT.Classification)[0].value
    assert call == (codes.SCT.Malignant if result["prediction"] == "MVCF" else codes.SCT.Benign)
    assert group.finding_sites[0].value == codes.SCT.Vertebra     # a point: no level known
    nearest = group.source_images[0].referenced_sop_instance_uid
    assert nearest in evidence
    texts = dict(_text_items(pydicom.dcmread(sr_path)))
    assert texts["111001"] == result["model"]["name"] and texts["111003"] == result["model"]["version"]
    assert texts["111002"] == f"sha256={result['model']['sha256']}"   # Algorithm Parameters
    from mvcf import RESEARCH_USE_DISCLAIMER

    notice = [item for item in sr.ContentSequence
              if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]   # TID 1500 Qualitative Evaluations
    assert len(notice) == 1 and notice[0].ContentSequence[0].TextValue == RESEARCH_USE_DISCLAIMER
    assert texts["121106"] == RESEARCH_USE_DISCLAIMER   # a probability never travels without the notice


def _text_items(ds):
    """(concept code value, text) of every TEXT content item, depth first."""
    for item in getattr(ds, "ContentSequence", []):
        if item.ValueType == "TEXT":
            yield item.ConceptNameCodeSequence[0].CodeValue, item.TextValue
        yield from _text_items(item)


def test_sc_key_images_are_a_new_series_of_the_source_study(real_run, real_ct):
    first = pydicom.dcmread(next(real_ct.iterdir()), stop_before_pixels=True)
    scs = [pydicom.dcmread(p) for p in sorted(real_run["dicom"].glob("SC_*.dcm"))]
    assert {ds.StudyInstanceUID for ds in scs} == {first.StudyInstanceUID}
    assert len({ds.SeriesInstanceUID for ds in scs}) == 1 and scs[0].SeriesInstanceUID != first.SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in scs}) == 2
    for ds in scs:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.PhotometricInterpretation == "RGB"
        assert str(ds.PatientName) == IDENTIFIERS["PatientName"]
        pixels = ds.pixel_array
        assert pixels.ndim == 3 and pixels.std() > 10      # a picture, not a blank frame
        assert "Research use only" in ds.ImageComments


def test_heatmap_parametric_map_overlays_the_source(real_run, real_ct):
    first = pydicom.dcmread(next(real_ct.iterdir()), stop_before_pixels=True)
    (path,) = real_run["dicom"].glob("PM_*.dcm")
    pm = pydicom.dcmread(path)
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and pm.StudyInstanceUID == first.StudyInstanceUID
    assert pm.FrameOfReferenceUID == first.FrameOfReferenceUID and pm.ContentQualification == "RESEARCH"
    values = pm.pixel_array   # on the CT's own lattice (mvcf.explain): its pixel spacing, at most its slices
    spacing = pm.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([float(v) for v in first.PixelSpacing])
    assert values.ndim == 3 and values.shape[0] <= 20 and values.dtype == np.float32
    assert 0.0 <= values.min() and values.max() <= 1.0
    derived = {item.ReferencedSOPInstanceUID for item in pm.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert derived <= {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in real_ct.iterdir()}


def test_an_occlusion_run_labels_its_heatmaps_as_occlusion(real_ct, work, capsys):
    """--heatmap-method occlusion reaches the report's key images and the DICOM objects, and says so."""
    report, dicom = work / "occlusion_report", work / "occlusion_dicom"
    code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--heatmap-method", "occlusion",
                       "--report", report, "--dicom-out", dicom, "--json")
    assert code == 0, err
    assert json.loads((report / "report.json").read_text(encoding="utf-8"))["heatmap_method"] == "occlusion"
    (path,) = dicom.glob("PM_*.dcm")
    pm = pydicom.dcmread(path)
    assert pm.ContentLabel == "OCCLUSION" and "Occlusion sensitivity heatmap" in pm.ContentDescription
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "OCCLUSION"
    assert all("Occlusion sensitivity overlay" in pydicom.dcmread(p).DerivationDescription for p in dicom.glob("SC_*.dcm"))
    if shutil.which("dciodvfy") is not None:
        for p in sorted(dicom.glob("*.dcm")):
            check = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True)
            assert not [x for x in (check.stdout + check.stderr).splitlines() if x.startswith("Error")], p.name
    code, out, err = run(capsys, "screen", "--ct", real_ct, "--seg", real_ct, "--heatmap-method", "lime")
    assert code == 2 and out == "" and "unknown heatmap method 'lime'" in err and err.count("\n") == 1


def _nonblank_png(path: Path) -> float:
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    return float(pixels.std())


def test_report_opens_in_chromium_and_the_pdf_renders(real_run, work):
    html = real_run["report"] / "report.html"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium (Debian package chromium) is not installed; .ci/run installs it")
    shot = work / "report_shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,1400", f"--screenshot={shot}", html.as_uri()], capture_output=True,
                   timeout=120, check=True)
    assert _nonblank_png(shot) > 20
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (Debian package poppler-utils) is not installed; .ci/run installs it")
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(real_run["report"] / "report.pdf"),
                    str(work / "page")], check=True, timeout=60)
    assert _nonblank_png(next(work.glob("page*.png"))) > 20


def test_report_shows_no_identifiers_unless_asked(real_run, real_ct, work, capsys):
    texts = {"html": (real_run["report"] / "report.html").read_text(encoding="utf-8"),
             "json": (real_run["report"] / "report.json").read_text(encoding="utf-8"),
             "stdout": real_run["stdout"]}
    if shutil.which("pdftotext"):
        texts["pdf"] = subprocess.run(["pdftotext", str(real_run["report"] / "report.pdf"), "-"],
                                      capture_output=True, text=True, check=True).stdout
    for what, text in texts.items():
        for value in (*IDENTIFIERS.values(), "Müller", "19670215", "1967-02-15"):
            assert value not in text, f"{value!r} in the report's {what}"
    assert "left out" in texts["html"]
    # every probability carries the disclaimer
    html = texts["html"]
    assert html.count("Research use only") >= 1 + html.count("<th>P(MVCF)</th>")
    code, _, _ = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--report", work / "named",
                     "--include-identifiers")
    assert code == 0
    named = (work / "named" / "report.html").read_text(encoding="utf-8")
    assert "Müller^Jürg" in named and "PID-4711" in named and "included (--include-identifiers)" in named


def test_blank_uids_and_nifti_get_one_clear_error(capsys, work):
    blank = shared(REAL)
    for extra in (["--dicom-out", work / "never"], ["--dicom-out", work / "never", "--send", "X@127.0.0.1:1"]):
        code, out, err = run(capsys, "predict", "--ct", blank, "--point-ijk", BODY_IJK, *extra)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("error: ") and "blank" in err and "UID" in err
        assert "Traceback" not in err and not (work / "never").exists()
    code, out, err = run(capsys, "predict", "--ct", blank, "--point-ijk", BODY_IJK, "--report", work / "blank_report")
    assert code == 0, err    # a report needs no UIDs
    assert "(blank)" in (work / "blank_report" / "report.html").read_text(encoding="utf-8")
    assert f"report: {work / 'blank_report' / 'report.html'}" in out
    nifti = shared("totalsegmentator/example_ct.nii.gz")
    code, _, err = run(capsys, "predict", "--ct", nifti, "--point-ijk", "60,50,50", "--dicom-out", work / "never")
    assert code == 2 and "needs a DICOM source" in err and not (work / "never").exists()
    code, _, err = run(capsys, "predict", "--ct", nifti, "--point-ijk", "60,50,50", "--send", "X@127.0.0.1:1")
    assert code == 2 and "--dicom-out" in err


def test_a_failed_send_is_reported_retried_and_keeps_the_files(real_ct, work, capsys):
    port = free_port()  # nothing listens there
    out_dir = work / "unsent"
    code, out, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", out_dir,
                         "--send", f"NOBODY@127.0.0.1:{port}", "--json")
    assert code == 2
    assert f"error: sending to NOBODY@127.0.0.1:{port} failed after 2 attempts" in err and str(out_dir) in err
    sent = json.loads(out)["outputs"]["sent"][0]
    assert sent["ok"] is False and sent["attempts"] == 2
    assert len(list(out_dir.glob("*.dcm"))) == 4


def _store_source(orthanc, folder: Path) -> str:
    for path in sorted(folder.iterdir()):
        orthanc.post("/instances", path.read_bytes())
    first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    return first.StudyInstanceUID


KINDS = {"1.2.840.10008.5.1.4.1.1.88.34": "SR", "1.2.840.10008.5.1.4.1.1.7": "SC",
         "1.2.840.10008.5.1.4.1.1.30": "PM"}


def _arrived(orthanc, study_uid: str, source_series_uid: str):
    """{SR|SC|PM: [pydicom Dataset]} of the instances Orthanc holds in that study, besides the source."""
    found = orthanc.post("/tools/find", json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
                         .encode(), "application/json")
    assert len(found) == 1, "the outputs did not land in the source study"
    out: dict[str, list] = {}
    for series_id in orthanc.get(f"/studies/{found[0]}")["Series"]:
        series = orthanc.get(f"/series/{series_id}")
        if series["MainDicomTags"]["SeriesInstanceUID"] == source_series_uid:
            continue
        for instance_id in series["Instances"]:
            ds = pydicom.dcmread(io.BytesIO(orthanc.file(instance_id)))
            out.setdefault(KINDS[ds.SOPClassUID], []).append(ds)
    return out


def _check_references(arrived, source_uids: set[str], frame_uid: str):
    assert len(arrived["SR"]) == 1 and len(arrived["SC"]) >= 2 and len(arrived["PM"]) >= 1
    sr = arrived["SR"][0]
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == source_uids
    for sc in arrived["SC"]:
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in source_uids
    for pm in arrived["PM"]:
        assert pm.FrameOfReferenceUID == frame_uid


def test_c_store_and_stow_rs_to_a_real_orthanc(orthanc, real_ct, work, capsys):
    study_uid = _store_source(orthanc, real_ct)
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(real_ct.iterdir())]
    source_uids = {ds.SOPInstanceUID for ds in source}
    code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", work / "cstore",
                       "--send", orthanc.destination, "--calling-aet", CALLING_AET)
    assert code == 0, err
    arrived = _arrived(orthanc, study_uid, source[0].SeriesInstanceUID)
    _check_references(arrived, source_uids, source[0].FrameOfReferenceUID)
    sent_by_c_store = {ds.SOPInstanceUID for datasets in arrived.values() for ds in datasets}
    code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", work / "stow",
                       "--dicomweb", orthanc.dicomweb)
    assert code == 0, err
    stowed = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in (work / "stow").glob("*.dcm")}
    after = _arrived(orthanc, study_uid, source[0].SeriesInstanceUID)
    held = {ds.SOPInstanceUID for datasets in after.values() for ds in datasets}
    assert stowed <= held and not stowed & sent_by_c_store
    _check_references({m: [ds for ds in d if ds.SOPInstanceUID in stowed] for m, d in after.items()}, source_uids,
                      source[0].FrameOfReferenceUID)


def test_a_pacs_that_does_not_know_our_calling_ae_title_is_named_as_the_likely_cause(orthanc, work):
    """Orthanc accepts the association of a calling AE title it does not know and closes it at the C-STORE; the
    error asks about that title (a PACS that takes longer than the timeout is named as such instead)."""
    from pydicom import examples

    from mvcf.dicom.pacs import send_c_store

    path = work / "stranger" / "CT.dcm"
    path.parent.mkdir()
    examples.ct.save_as(path, enforce_file_format=True)
    result = send_c_store([path], orthanc.destination, "STRANGER")
    assert not result.ok and result.stored == 0
    assert "ORTHANC ended the association at the C-STORE of CT.dcm without a status (does it know our calling " \
           "AE title STRANGER?" in result.error


def test_retrieve_study_by_wado_rs_then_predict(orthanc, real_ct, work, capsys):
    """--retrieve-study fetches the study (source CT plus the outputs sent above) and reads its one CT series."""
    first = pydicom.dcmread(next(real_ct.iterdir()), stop_before_pixels=True)
    _store_source(orthanc, real_ct)   # already there when the send test ran first; storing again is harmless
    fetched = work / "fetched"
    code, out, err = run(capsys, "predict", "--ct", fetched, "--retrieve-study", first.StudyInstanceUID,
                         "--retrieve-from", orthanc.dicomweb, "--point-ijk", BODY_IJK, "--report",
                         work / "fetched_report", "--json")
    assert code == 0, err
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in fetched.glob("*.dcm")}
    assert {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in real_ct.iterdir()} <= uids
    report = json.loads((work / "fetched_report" / "report.json").read_text(encoding="utf-8"))
    assert report["source"]["series_instance_uid"] == first.SeriesInstanceUID
    # with no report or DICOM output asked for, the result is printed (the outputs step retrieved the study a
    # second time, found the folder it had just filled and ended in "already exists", exit 2)
    code, out, err = run(capsys, "predict", "--ct", work / "fetched_bare", "--retrieve-study",
                         first.StudyInstanceUID, "--retrieve-from", orthanc.dicomweb, "--point-ijk", BODY_IJK,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["probability_malignant"] == json.loads(
        (work / "fetched_report" / "report.json").read_text(encoding="utf-8"))["results"][0]["probability_malignant"]
    code, _, err = run(capsys, "predict", "--ct", work / "never_fetched", "--retrieve-study", "1.2.3.4",
                       "--retrieve-from", orthanc.dicomweb, "--point-ijk", BODY_IJK)
    assert code == 2 and err.startswith("error: cannot retrieve study 1.2.3.4") and err.count("\n") == 1
    assert not (work / "never_fetched").exists()


def test_sample_ct_as_dicom_every_vertebra_to_orthanc(orthanc, work, capsys):
    """`mvcf screen` on the sample CT written as a DICOM series: every vertebra's measurements and call in one
    SR (SNOMED CT level codes), key images and heatmaps, C-STOREd into the study."""
    from pydicom.sr.codedict import codes

    from mvcf.dicom.sr import level_code
    from mvcf.read_ct import read_ct
    from mvcf.resources import sample_ct_paths

    sample = sample_ct_paths()
    folder = write_ct_series(read_ct(sample["ct"]), work / "sample_dicom")
    study_uid = _store_source(orthanc, folder)
    code, out, err = run(capsys, "screen", "--ct", folder, "--seg", sample["mask"], "--dicom-out",
                         work / "sample_out", "--report", work / "sample_report", "--send", orthanc.destination,
                         "--calling-aet", CALLING_AET, "--json")
    assert code == 0, err
    rows = json.loads(out)["vertebrae"]
    classified = [r for r in rows if r["probability_malignant"] is not None and r["center_lps"] is not None]
    assert len(classified) >= 5
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    arrived = _arrived(orthanc, study_uid, source[0].SeriesInstanceUID)
    _check_references(arrived, {ds.SOPInstanceUID for ds in source}, source[0].FrameOfReferenceUID)
    assert len(arrived["SC"]) == 2 * len(classified) + 1 and len(arrived["PM"]) == len(classified)
    overview = [sc for sc in arrived["SC"] if "Genant grade outline" in sc.DerivationDescription]
    assert len(overview) == 1 and overview[0].InstanceNumber == 1 and overview[0].PatientOrientation == ["P", "F"]
    sr = hd.sr.Comprehensive3DSR.from_dataset(arrived["SR"][0])
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    for r in classified:
        group = groups[r["level"]]
        assert group.finding_sites[0].value == level_code(r)
        assert group.finding_sites[0].value != codes.SCT.Vertebra
        value = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)[0].value
        assert value == pytest.approx(r["probability_malignant"])
        if r["trabecular_hu"] is not None:
            hu = group.get_measurements(name=codes.DCM.AttenuationCoefficient)[0].value
            assert hu == pytest.approx(r["trabecular_hu"])
    html = (work / "sample_report" / "report.html").read_text(encoding="utf-8")
    assert all(f"<h2>{r['level']}" in html for r in classified) and "Genant grade" in html
    assert '<img src="screen_overview.png"' in html and (work / "sample_report" / "screen_overview.png").is_file()


def test_screening_fields_go_into_the_sr_and_the_report(real_run, real_ct):
    """Rows `mvcf screen` adds (level, heights, Genant grade, trabecular HU) read back from the SR with their
    codes and appear in the report."""
    from pydicom.sr.codedict import codes

    from mvcf.dicom.source import load_source
    from mvcf.dicom.sr import PRIVATE_SCHEME, build_sr
    from mvcf.report import case_context, render_html

    base = real_run["payload"]
    screened = {**base, "name": "vertebrae_T12", "level": "T12", "height_anterior_mm": 18.4,
                "height_middle_mm": 15.1, "height_posterior_mm": 24.9, "genant_grade": 2, "trabecular_hu": 87.0}
    sr = build_sr(load_source(real_ct), [screened, {"name": "L1", "error": "label 31 is absent"}], base["model"])
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(_roundtrip(sr)))
    (group,) = sr.content.get_image_measurement_groups()
    assert group.finding_sites[0].value == codes.SCT.T12Vertebra
    heights = {m.name.value: m.value for m in group.get_measurements() if m.name.scheme_designator == PRIVATE_SCHEME}
    assert heights == {"AVBH": pytest.approx(18.4), "MVBH": pytest.approx(15.1), "PVBH": pytest.approx(24.9)}
    hu = group.get_measurements(name=codes.DCM.AttenuationCoefficient)[0]
    assert hu.value == pytest.approx(87.0) and hu.unit.value == "[hnsf'U]"
    grade = [e for e in group.get_qualitative_evaluations() if e.name.value == "GENANT"][0]
    assert grade.value.value == "GENANT2"
    html = render_html(case_context([screened], {}, None, []))
    for text in ("Anterior body height", "18.4 mm", "Genant grade", "87 HU", "(T12)"):
        assert text in html


def _roundtrip(ds):
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_a_folder_with_several_series_reads_the_one_ct_or_the_uid_given(real_run, real_ct, work, capsys):
    from mvcf.read_ct import read_ct
    from mvcf.resources import sample_ct_paths

    mixed = work / "mixed"
    shutil.copytree(real_ct, mixed)
    for path in real_run["dicom"].glob("SC_*.dcm"):     # a second (non-CT) series in the same folder
        shutil.copy(path, mixed)
    series_uid = pydicom.dcmread(next(real_ct.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    notes: list[str] = []
    ct = read_ct(mixed, warnings=notes)
    assert ct.size_ijk == (512, 512, 20)
    assert len(notes) == 1 and series_uid in notes[0] and "the only CT series of 2" in notes[0]
    sample = write_ct_series(read_ct(sample_ct_paths()["ct"]), work / "second_ct")
    for path in sample.iterdir():
        shutil.copy(path, mixed / f"sample_{path.name}")
    code, _, err = run(capsys, "predict", "--ct", mixed, "--point-ijk", BODY_IJK)
    assert code == 2 and err.count("\n") == 1 and "--series-uid" in err and series_uid in err
    code, out, err = run(capsys, "predict", "--ct", mixed, "--series-uid", series_uid, "--point-ijk", BODY_IJK,
                         "--report", work / "mixed_report", "--json")
    assert code == 0, err
    report = json.loads((work / "mixed_report" / "report.json").read_text(encoding="utf-8"))
    assert report["source"]["series_instance_uid"] == series_uid
    code, _, err = run(capsys, "predict", "--ct", mixed, "--series-uid", "1.2.3", "--point-ijk", BODY_IJK)
    assert code == 2 and "has no series 1.2.3" in err


def test_bad_output_requests_are_refused_before_any_work(real_ct, work, capsys):
    """Refusals come from check_outputs, before the CT is read or a model loaded: one line, exit 2."""
    a_file = work / "a_file"
    a_file.write_text("x")
    cases = [(["--report", a_file], "exists and is not a folder"),
             (["--dicom-out", a_file], "exists and is not a folder"),
             (["--dicom-out", work / "d", "--dicomweb", "ftp://pacs/"], "http(s) base URL"),
             (["--dicom-out", work / "d", "--send", "TOO_LONG_AE_TITLE_X@h:1"], "AET@HOST:PORT"),
             (["--dicom-out", work / "d", "--series-uid", "9.9.9"], "has no series 9.9.9")]
    for extra, message in cases:
        code, out, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, *extra)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (extra, err)
    assert not (work / "d").exists()


def test_report_and_dicom_out_are_placed_by_outputs_guard(real_run, real_ct, work, capsys):
    """--report / --dicom-out never name an input (the CT's folder, a file in it, a folder holding it) nor a
    folder of the user's; a rerun needs --overwrite, which replaces only mvcf's own earlier output."""
    first = sorted(real_ct.iterdir())[0]
    before = first.read_bytes()
    users = work / "users_folder"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    cases = [(["--report", real_ct], "is an input of this run"),
             (["--report", first], "lies inside the input folder"),
             (["--report", real_ct / "sub"], "lies inside the input folder"),
             (["--dicom-out", work], "holds the input"),
             (["--report", users, "--overwrite"], "holds files mvcf did not write"),
             (["--dicom-out", users, "--overwrite"], "holds files mvcf did not write"),
             (["--report", work / "same", "--dicom-out", work / "same"], "write the same file"),
             (["--report", real_run["report"]], "already holds an earlier output of mvcf"),
             (["--dicom-out", real_run["dicom"]], "already holds an earlier output of mvcf")]
    for extra, message in cases:
        code, out, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, *extra)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (extra, err)
    assert first.read_bytes() == before and sorted(p.name for p in users.iterdir()) == ["notes.txt"]
    assert not (work / "same").exists() and not (real_ct / "sub").exists()
    folder, report = work / "rerun_dicom", work / "rerun_report"
    for attempt in range(2):
        code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", folder,
                           "--report", report, "--overwrite")
        assert code == 0, err
        if attempt == 0:   # the user adds a file to each output folder of the first run
            (folder / "my_notes.txt").write_text("mine")
            (report / "my_notes.txt").write_text("mine")
    assert len(list(folder.glob("*.dcm"))) == 4  # the earlier run's objects were replaced, not kept beside the new ones
    assert (folder / ".mvcf-output").is_file()
    assert (folder / "my_notes.txt").read_text() == "mine" and (report / "my_notes.txt").read_text() == "mine"
    assert len(list(report.glob("*.png"))) == 2 and (report / "report.html").is_file()


def test_source_without_type2_patient_attributes_gets_them_empty(real_ct, work):
    """A series lacking Type 2 patient/study attributes: the outputs carry them empty, never invented; the
    user's files stay untouched."""
    from mvcf.dicom.source import load_source
    from mvcf.dicom.sr import build_sr

    folder = work / "no_patient_id"
    shutil.copytree(real_ct, folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        del ds.PatientID, ds.AccessionNumber
        ds.save_as(path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = {"name": "L2", "probability_malignant": 0.3, "prediction": "OVCF", "threshold": 0.7,
              "center_lps": [0.0, 0.0, -790.0], "model": {"name": "m", "version": "1", "sha256": "0" * 64}}
    sr = build_sr(load_source(folder), [result], result["model"])
    assert sr.PatientID == "" and sr.AccessionNumber == "" and str(sr.PatientName) == IDENTIFIERS["PatientName"]
    assert before == {p.name: p.read_bytes() for p in folder.iterdir()}


def test_dicom_source_for_a_ct_exported_to_nrrd(real_ct, work, capsys):
    """--dicom-source: a CT saved as NRRD (as Slicer exports it) still gets DICOM output in its source study;
    a source series elsewhere in space is refused."""
    import SimpleITK as sitk

    from mvcf.read_ct import read_ct
    from mvcf.resources import sample_ct_paths

    nrrd = work / "exported.nrrd"
    sitk.WriteImage(read_ct(real_ct).to_sitk(), str(nrrd))
    first = pydicom.dcmread(next(real_ct.iterdir()), stop_before_pixels=True)
    code, _, err = run(capsys, "predict", "--ct", nrrd, "--point-ijk", BODY_IJK, "--dicom-source", real_ct,
                       "--dicom-out", work / "from_nrrd")
    assert code == 0, err
    sr = pydicom.dcmread(next((work / "from_nrrd").glob("SR_*.dcm")))
    assert sr.StudyInstanceUID == first.StudyInstanceUID
    elsewhere = write_ct_series(read_ct(sample_ct_paths()["ct"]), work / "elsewhere")
    code, _, err = run(capsys, "predict", "--ct", nrrd, "--point-ijk", BODY_IJK, "--dicom-source", elsewhere,
                       "--dicom-out", work / "never_nrrd")
    assert code == 2 and "outside the slices of the DICOM source" in err and not (work / "never_nrrd").exists()


def test_screening_rows_through_write_outputs(real_run, real_ct, work):
    """The shape `mvcf screen` hands over: rows keyed by level with measurements, `notes`, no threshold or
    model; some not classified (no probability, no centre), some blank. Measured-only rows keep their
    measurements in the SR and the report; only classified rows get key images and heatmaps."""
    import argparse

    from mvcf.cli.outputs import add_output_arguments, write_outputs
    from mvcf.read_ct import read_ct

    parser = argparse.ArgumentParser()
    parser.add_argument("--ct")
    add_output_arguments(parser)
    args = parser.parse_args(["--ct", str(real_ct), "--report", str(work / "screen_report"), "--dicom-out",
                              str(work / "screen_dicom")])
    base = real_run["payload"]
    rows = [{"level": "T12", "height_anterior_mm": 21.0, "height_middle_mm": 19.5, "height_posterior_mm": 24.0,
             "genant_grade": 1, "trabecular_hu": 120.0, "probability_malignant": base["probability_malignant"],
             "prediction": base["prediction"], "center_lps": base["center_lps"], "notes": ["a screening note"]},
            {"level": "L1", "height_anterior_mm": 25.0, "genant_grade": 0, "trabecular_hu": 140.0,
             "probability_malignant": None, "prediction": None, "center_lps": None, "notes": []},
            {"level": "L2", "height_anterior_mm": None, "genant_grade": None, "trabecular_hu": None,
             "probability_malignant": None, "prediction": None, "center_lps": None, "notes": []}]
    outputs = write_outputs(args, read_ct(real_ct), rows)
    names = sorted(Path(p).name.split("_")[0] for p in outputs["dicom"])
    assert names == ["PM", "SC", "SC", "SR"]
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(next((work / "screen_dicom").glob("SR_*.dcm"))))
    from pydicom.sr.codedict import codes

    groups = sr.content.get_image_measurement_groups()
    assert [g.finding_sites[0].value for g in groups] == [codes.SCT.T12Vertebra, codes.SCT.L1Vertebra]
    # a screened level graded 0 is a vertebra assessed, not a fracture ("L1: vertebral compression fracture,
    # Genant grade 0 (normal)")
    assert [g.finding_type.meaning for g in groups] == ["Vertebral compression fracture",
                                                        "Vertebra screened for compression fracture"]
    assert not groups[1].get_measurements(name=codes.DCM.ProbabilityOfCancer)
    assert groups[1].get_measurements(name=codes.DCM.AttenuationCoefficient)[0].value == pytest.approx(140.0)
    html = (work / "screen_report" / "report.html").read_text(encoding="utf-8")
    assert "not classified" in html and "a screening note" in html and "140 HU" in html
    summary = html[html.index("<h2>Summary</h2>"):html.index("<h2>T12")]
    assert all(level in summary for level in ("T12", "L1", "L2")) and "Genant grade" in summary


def test_an_interrupt_while_the_dicom_objects_are_written_takes_the_finished_report_away_too(
        real_ct, work, capsys, monkeypatch):
    """Ctrl-C (or Cancel) after the report is written, while the DICOM objects are: the run exits 130 and
    leaves neither the report, nor the heatmap written before it, nor the folders it made for them; a
    file of the user's beside them stays."""
    from mvcf.cli import outputs as case_outputs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(case_outputs, "_write_dicom", interrupted)
    base = work / "interrupted"
    base.mkdir()
    (base / "mine.txt").write_text("mine", encoding="utf-8")
    code, out, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--heatmap",
                         base / "maps" / "L1.nii.gz", "--report", base / "report", "--dicom-out", base / "dicom")
    assert code == 130 and err.strip().splitlines()[-1] == "error: interrupted"
    assert sorted(p.name for p in base.iterdir()) == ["mine.txt"]


def test_an_interrupted_overwrite_leaves_the_earlier_run_as_it_was(real_ct, work, capsys, monkeypatch):
    """--overwrite, then Ctrl-C (or Cancel) while the new DICOM objects are written: the earlier run's
    heatmap, report and DICOM objects are back byte for byte, and nothing of the new run or its bookkeeping
    is left; the same run without the interrupt then replaces them."""
    from mvcf.cli import outputs as case_outputs

    base = work / "interrupted_overwrite"
    argv = ["predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--heatmap", base / "maps" / "L1.nii.gz",
            "--report", base / "report", "--dicom-out", base / "dicom", "--overwrite"]
    assert run(capsys, *argv)[0] == 0

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    earlier = files()
    write_dicom = case_outputs._write_dicom

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(case_outputs, "_write_dicom", interrupted)
    code, _, err = run(capsys, *argv)
    assert code == 130 and err.strip().splitlines()[-1] == "error: interrupted"
    assert files() == earlier
    monkeypatch.setattr(case_outputs, "_write_dicom", write_dicom)
    assert run(capsys, *argv)[0] == 0
    def names(found: dict[str, bytes]) -> list[str]:   # the DICOM objects by kind: their names hold new UIDs
        return sorted(name.split("_")[0] if name.startswith("dicom/") else name for name in found)

    again = files()
    assert names(again) == names(earlier) and not set(again) & {n for n in earlier if n.endswith(".dcm")}


def test_an_interrupt_during_the_pacs_send_keeps_every_file(real_ct, work, capsys, monkeypatch):
    """Once the send has started the local files are the record of what the PACS may hold: a Ctrl-C then
    exits 130 and leaves the heatmap, the report and the DICOM objects in place."""
    import mvcf.dicom.pacs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mvcf.dicom.pacs, "send_all", interrupted)
    base = work / "interrupted_send"
    code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--heatmap",
                       base / "maps" / "L1.nii.gz", "--report", base / "report", "--dicom-out", base / "dicom",
                       "--send", f"NOBODY@127.0.0.1:{free_port()}")
    assert code == 130 and err.strip().splitlines()[-1] == "error: interrupted"
    assert (base / "maps" / "L1.nii.gz").is_file() and (base / "report" / "report.html").is_file()
    assert len(list((base / "dicom").glob("*.dcm"))) == 4


def test_the_report_gives_a_perfect_validation_auc_its_newcombe_interval():
    """The report's model box read "1.000 (95% CI 1.000-1.000, DeLong; n = 26)" where the card itself holds
    Newcombe's interval for that perfect separation (the ROC plot and metrics.json used it)."""
    from mvcf.report import model_summary

    card = {"validation_metrics": {"validation": {"auc": 1.0, "auc_ci_delong": [1.0, 1.0],
                                                  "auc_ci_newcombe": [0.854, 1.0], "n": 26}}}
    assert model_summary(card)["validation_auc"] == "1.000 (95% CI 0.854-1.000, Newcombe, DeLong degenerate; n = 26)"
    card["validation_metrics"]["validation"] = {"auc": 0.9, "auc_ci_delong": [0.8, 0.97], "n": 40}
    assert model_summary(card)["validation_auc"] == "0.900 (95% CI 0.800-0.970, DeLong; n = 40)"


def test_an_empty_heatmap_going_into_the_dicom_map_is_warned_of(work, real_ct, capsys, caplog, monkeypatch):
    """Grad-CAM finds no positive evidence for some vertebrae (the sample's T11 and L3 in a screen): --heatmap
    warned "the heatmap is empty", but the key images and the Parametric Map carried the blank map without a
    word."""
    import mvcf.explain

    real = mvcf.explain.explain

    def blank(*args, **kwargs):
        heat, rest = real(*args, **kwargs)
        heat.voxels[...] = 0
        return heat, rest
    monkeypatch.setattr(mvcf.explain, "explain", blank)
    out = work / "blank_dicom"
    with caplog.at_level("WARNING"):
        code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", out)
    assert code == 0, err
    assert any("its heatmap in the key images and the DICOM parametric map is empty" in r.getMessage()
               for r in caplog.records)


def test_overwrite_removes_only_dicom_objects_mvcf_wrote(work, real_ct, capsys):
    """--overwrite pruned --dicom-out by file name alone: a user's file named like ours (SR_1.2.3.dcm, a CT
    slice here) was deleted; only objects whose header says mvcf wrote them may go."""
    out = work / "overwrite_dicom"
    code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", out)
    assert code == 0, err
    earlier = sorted(p.name for p in out.glob("*.dcm"))
    shutil.copy(next(real_ct.iterdir()), out / "SR_1.2.3.dcm")
    code, _, err = run(capsys, "predict", "--ct", real_ct, "--point-ijk", BODY_IJK, "--dicom-out", out, "--overwrite")
    assert code == 0, err
    now = sorted(p.name for p in out.glob("*.dcm"))
    assert "SR_1.2.3.dcm" in now and not set(earlier) & set(now) and len(now) == len(earlier) + 1
