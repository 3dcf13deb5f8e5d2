"""The cohort manifest: parsing, every validation rule, one-line error naming every bad row, round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mvcf.errors import MVCFError
from mvcf.manifest import CaseRecord, parse_label, parse_point, read_manifest, write_manifest

HEADER = "case_id,patient_id,institution,label,ct,mask,vertebra_label,center_lps,point_ras\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz", "m.nii.gz"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    return tmp_path


def _write(folder: Path, body: str, header: str = HEADER) -> Path:
    path = folder / "manifest.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_reads_every_location_form_and_label_spelling(folder):
    path = _write(folder,
                  "c1,p1,A,MVCF,imgs/a.nii.gz,imgs/m.nii.gz,31,,\n"
                  "c2,p2,A,osteoporotic,imgs/b.nii.gz,,,\"1,2,3\",\n"
                  "c3,p3,B,1,imgs/c.nii.gz,,,,\"10, 20, 30\"\n"
                  "c4,p3,B,Malignant,imgs/c.nii.gz,,,,\"[1 2 3]\"\n")
    records = read_manifest(path)
    assert [r.label for r in records] == [1, 0, 1, 1]
    assert records[0].mask == folder / "imgs" / "m.nii.gz" and records[0].vertebra_label == 31
    assert records[0].center_lps is None
    np.testing.assert_allclose(records[1].center_lps, [1, 2, 3])
    np.testing.assert_allclose(records[2].center_lps, [-10, -20, 30])  # RAS -> LPS
    assert records[0].ct == folder / "imgs" / "a.nii.gz" and records[0].row == 2


def test_every_bad_row_is_named_in_one_line(folder):
    path = _write(folder,
                  "c1,p1,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\n"          # row 2: fine
                  "c2,p2,A,benign?,imgs/b.nii.gz,,,\"1,2,3\",\n"       # row 3: unknown label
                  "c3,p3,A,OVCF,imgs/missing.nii.gz,,,\"1,2,3\",\n"    # row 4: missing CT
                  "c1,p4,A,OVCF,imgs/b.nii.gz,,,\"1,2,3\",\n"          # row 5: duplicate case id
                  "c5,p1,B,OVCF,imgs/b.nii.gz,,,\"1,2,3\",\n"          # row 6: p1 in A and B (and row 2)
                  "c6,p6,A,OVCF,imgs/b.nii.gz,imgs/m.nii.gz,,,\n"      # row 7: mask without label
                  "c7,p7,A,OVCF,imgs/b.nii.gz,,,,\n"                   # row 8: no location
                  "c8,p8,A,OVCF,imgs/b.nii.gz,,,\"1,2\",\n")           # row 9: bad point
    with pytest.raises(MVCFError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "\n" not in message
    assert "8 bad rows (2, 3, 4, 5, 6, 7, 8, 9)" in message
    for fragment in ("unknown label 'benign?'", "ct not found", "duplicate case_id 'c1'",
                     "several institutions", "must be given together", "no location"):
        assert fragment in message


def test_missing_columns_and_files(folder):
    with pytest.raises(MVCFError, match="lacks column"):
        read_manifest(_write(folder, "c1,p1,A,MVCF\n", header="case_id,patient_id,institution,label\n"))
    with pytest.raises(MVCFError, match="no location column"):
        read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz\n",
                             header="case_id,patient_id,institution,label,ct\n"))
    with pytest.raises(MVCFError, match="manifest not found"):
        read_manifest(folder / "nope.csv")
    with pytest.raises(MVCFError, match="no case rows"):
        read_manifest(_write(folder, ""))


def test_a_column_given_twice_is_refused_not_read_from_the_last(folder):
    """A manifest with two `label` columns (here `label` and ` Label`) was read from the last one: every case
    OVCF, trained without a word. Which column holds the labels is not clear, so it is refused."""
    header = HEADER.rstrip("\n") + ", Label\n"
    with pytest.raises(MVCFError, match="its header names the column 'label' twice"):
        read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",,OVCF\n", header=header))


def test_a_row_with_more_cells_than_the_header_is_refused(folder):
    """An unquoted point (`1,2,3` instead of `"1,2,3"`) spills into cells the header does not name; they were
    dropped (filed under an empty column name in `extra`), so the row was read from the wrong cells."""
    with pytest.raises(MVCFError, match=r"1 bad row \(3\): row 3: 11 cells under a header of 9 columns "
                                        r"\(quote a cell that holds a comma"):
        read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\n"
                                     "c2,p2,A,OVCF,imgs/b.nii.gz,,,1,2,3,\n"))


def test_one_institution_spelled_two_ways_is_refused(folder):
    """'Site A' and 'site  a' counted as two institutions: two sites for the split and the tables."""
    rows = ("c1,p1,Site A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\n"
            "c2,p2,site  a,OVCF,imgs/b.nii.gz,,,\"1,2,3\",\n")
    with pytest.raises(MVCFError, match=r"1 bad row \(3\): row 3: institution 'site  a' is written 'Site A' in row "
                                        r"2: one site needs one spelling"):
        read_manifest(_write(folder, rows))


def test_a_fractional_vertebra_label_is_refused_not_cut(folder):
    """vertebra_label 28.7 was read as 28 (int(float(...))); 31.0, as a spreadsheet writes 31, stays 31."""
    with pytest.raises(MVCFError, match="vertebra_label '28.7' is not an integer"):
        read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,imgs/a.nii.gz,28.7,,\n"))
    assert read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,imgs/a.nii.gz,31.0,,\n"))[0].vertebra_label == 31


def test_one_patient_id_spelled_two_ways_is_refused(folder):
    """'P01' and 'p01' were two patients to the patient-level split, so one person's scans could fall on
    both sides of it; a reader sees one id."""
    rows = ("c1,P01,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\n"
            "c2,p01,A,OVCF,imgs/b.nii.gz,,,\"1,2,3\",\n"
            "c3,P01,A,OVCF,imgs/a.nii.gz,,,\"4,5,6\",\n")
    with pytest.raises(MVCFError, match=r"1 bad row \(3\): row 3: patient_id 'p01' is written 'P01' in row 2: one "
                                        r"patient needs one id"):
        read_manifest(_write(folder, rows))


def test_one_scan_given_to_two_patients_is_refused(folder):
    """The same CT (also through a symlink) under two patient ids: the patient-level folds would put its
    vertebrae on both sides of a split. Several vertebrae of one patient's scan stay fine."""
    (folder / "imgs" / "link.nii.gz").symlink_to(folder / "imgs" / "a.nii.gz")
    rows = ("c1,p1,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\n"
            "c2,p1,A,MVCF,imgs/a.nii.gz,,,\"4,5,6\",\n"
            "c3,p2,A,OVCF,imgs/link.nii.gz,,,\"7,8,9\",\n")
    with pytest.raises(MVCFError, match=r"1 bad row \(4\): row 4: ct is row 2's scan, of patient 'p1', not 'p2' "
                                        r"\(one scan is one patient's"):
        read_manifest(_write(folder, rows))
    assert len(read_manifest(_write(folder, rows.replace("c3,p2", "c3,p1")))) == 3


def test_one_vertebra_under_two_case_ids_is_refused(folder):
    """The same scan and mask label (or the same centre) under two case ids was counted twice in every metric
    and its confidence interval; another label or centre of that scan is another case."""
    (folder / "imgs" / "link.nii.gz").symlink_to(folder / "imgs" / "a.nii.gz")
    rows = ("c1,p1,A,MVCF,imgs/a.nii.gz,imgs/m.nii.gz,31,,\n"
            "c2,p1,A,MVCF,imgs/link.nii.gz,imgs/m.nii.gz,31,,\n"
            "c3,p1,A,OVCF,imgs/a.nii.gz,imgs/m.nii.gz,30,,\n"
            "c4,p1,A,OVCF,imgs/a.nii.gz,,,\"1,2,3\",\n"
            "c5,p1,A,OVCF,imgs/a.nii.gz,,,,\"-1,-2,3\"\n")
    with pytest.raises(MVCFError, match=r"2 bad rows \(3, 6\): row 3: names the vertebra of row 2 \(case 'c1': the "
                                        r"same scan and location\); one vertebra is one case.*row 6: names the "
                                        r"vertebra of row 5"):
        read_manifest(_write(folder, rows))
    assert len(read_manifest(_write(folder, rows.replace(",31,,\n\"c2", ",31,,\nc2").replace(
        "c2,p1,A,MVCF,imgs/link.nii.gz,imgs/m.nii.gz,31", "c2,p1,A,MVCF,imgs/b.nii.gz,imgs/m.nii.gz,31").replace(
        "\"-1,-2,3\"", "\"-1,-2,4\"")))) == 5


def test_conflicting_locations_in_one_row_are_refused(folder):
    """center_lps and point_ras naming two places: center_lps was taken in silence."""
    with pytest.raises(MVCFError, match=r"row 2: center_lps and point_ras name points 4.5 mm apart"):
        read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\"-1,-2,7.5\"\n"))
    record, = read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,,,\"1,2,3\",\"-1,-2,3\"\n"))
    np.testing.assert_allclose(record.center_lps, [1, 2, 3])


def test_mask_file_must_exist(folder):
    with pytest.raises(MVCFError, match=r"1 bad row \(2\): row 2: mask not found"):
        read_manifest(_write(folder, "c1,p1,A,MVCF,imgs/a.nii.gz,imgs/nomask.nii.gz,31,,\n"))


def test_label_and_point_parsers():
    assert parse_label(" mvcf ") == 1 and parse_label("OVCF") == 0 and parse_label("0.0") == 0
    with pytest.raises(MVCFError):
        parse_label("2")
    np.testing.assert_allclose(parse_point("(1.5; -2; 3e1)"), [1.5, -2, 30])
    with pytest.raises(MVCFError):
        parse_point("1,2,nan")


def test_write_then_read_round_trip_with_relative_paths(folder):
    records = [
        CaseRecord("c1", "p1", "A", 1, folder / "imgs" / "a.nii.gz", mask=folder / "imgs" / "m.nii.gz",
                   vertebra_label=31, center_lps=np.array([1.0, 2.0, 3.0]), extra={"level": "L1"}),
        CaseRecord("c2", "p2", "B", 0, folder / "imgs" / "b.nii.gz", center_lps=np.array([-1.0, 0.5, 9.25])),
    ]
    path = write_manifest(folder / "manifest.csv", records)
    text = path.read_text(encoding="utf-8")
    assert "imgs/a.nii.gz" in text and str(folder) not in text
    back = read_manifest(path)
    assert [(r.case_id, r.label, r.institution, r.vertebra_label) for r in back] == \
        [("c1", 1, "A", 31), ("c2", 0, "B", None)]
    np.testing.assert_allclose(back[1].center_lps, [-1.0, 0.5, 9.25])
    assert back[0].extra["level"] == "L1" and back[0].label_name == "MVCF"


def test_predictions_file_keeps_the_probability_the_call_was_made_on(tmp_path):
    """6 decimals wrote 0.6604996 as 0.660500 beside "OVCF" at threshold 0.6605: read back, the file's own
    probability called the other class, and ranks tied that were not."""
    import csv

    from mvcf.manifest import write_predictions

    threshold = 0.6605
    scores = {"a": 0.6604996323585510, "b": 0.6604996323585511, "c": 1 / 3}
    records = [CaseRecord(c, c, "A", 1, tmp_path / f"{c}.nii.gz") for c in scores]
    write_predictions(tmp_path / "p.csv", records, {"m": scores}, threshold=threshold)
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["case_id"]: float(r["probability_malignant"]) for r in rows} == scores
    assert all((float(r["probability_malignant"]) >= threshold) == (r["prediction"] == "MVCF") for r in rows)
