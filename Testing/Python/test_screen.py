"""Whole-spine screening: numbering, morphometry against TotalSegmentator's spine report, trabecular HU
against an independent hand measurement, the TPTBox osteoporotic L3, a VerSe mask, Genant grades on
synthetic vertebrae, and the `mvcf screen` command (one batched forward pass, bad input, manifest)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, shared
from mvcf import morphometry, numbering
from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError

SAMPLE = REPO / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"
CT = SAMPLE / "example_ct.nii.gz"
SEG = SAMPLE / "totalseg.nii.gz"


@pytest.fixture(scope="module")
def sample_run():
    """The sample CT screened once for the module, and the batch size of every forward pass."""
    from mvcf import inference
    from mvcf.screen import screen_files

    bundle = inference.load_model(None, "cpu")
    calls: list[int] = []
    hook = bundle.model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        result = screen_files(CT, SEG, model=bundle, device="cpu")
    finally:
        hook.remove()
    return result, calls


@pytest.fixture(scope="module")
def sample_screen(sample_run):
    return sample_run[0]


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    """The sample CT and mask cut to the slices of L2-L4 (L1 and L5 only in part): for the command-line
    runs, which test files, resuming and sharding rather than the measurements."""
    import SimpleITK as sitk

    seg = sitk.ReadImage(str(SEG))
    k = np.flatnonzero(np.isin(sitk.GetArrayFromImage(seg), (28, 29, 30)).any(axis=(1, 2)))
    lo, hi = int(k[0]) - 1, int(k[-1]) + 2
    folder = tmp_path_factory.mktemp("small_case")
    for source, name in ((CT, "ct.nii.gz"), (SEG, "seg.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(source))[:, :, lo:hi], str(folder / name))
    return folder / "ct.nii.gz", folder / "seg.nii.gz"


def _rows(result) -> dict:
    return {r["level"]: r for r in result.vertebrae}


# --- numbering ---------------------------------------------------------------------------------------

def test_totalsegmentator_v2_and_verse_tables():
    ts, v1, verse = (numbering.TABLES[k] for k in ("totalsegmentator", "totalsegmentator-v1", "verse"))
    assert (ts[26], ts[27], ts[31], ts[32], ts[43], ts[44], ts[50]) == ("S1", "L5", "L1", "T12", "T1", "C7", "C1")
    assert (v1[18], v1[22], v1[23], v1[34], v1[41]) == ("L5", "L1", "T12", "T1", "C1")
    assert (verse[1], verse[7], verse[8], verse[19], verse[20], verse[24], verse[25], verse[26], verse[28]) == \
        ("C1", "C7", "T1", "T12", "L1", "L5", "L6", "S1", "T13")


def test_sample_mask_is_totalsegmentator_v2():
    import SimpleITK as sitk

    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(SEG))))
    found = numbering.detect_numbering(values)
    assert found.name == "totalsegmentator" and found.levels[31] == "L1" and found.levels[27] == "L5"


def test_detection_rules_and_refusals():
    assert numbering.detect_numbering([21, 22, 23]).levels == {21: "L2", 22: "L3", 23: "L4"}
    assert numbering.detect_numbering([19, 20, 28]).levels[28] == "T13"
    named = numbering.detect_numbering([5, 9], {5: "vertebrae_L1", 9: "liver"})
    assert named.levels == {5: "L1"} and named.name == "segment names"
    with pytest.raises(MVCFError, match="no vertebra labels"):
        numbering.detect_numbering([52, 79])          # TotalSegmentator organs only
    with pytest.raises(MVCFError, match="unknown numbering"):
        numbering.check_numbering("nnunet")
    with pytest.raises(MVCFError, match="no vertebra labels"):
        numbering.resolve_numbering("totalsegmentator", [1, 2, 5])
    assert numbering.adjacent_levels("L1", ["T12", "T13", "L2"]) == ("T13", "L2")
    assert numbering.adjacent_levels("L1", ["T12", "L2"]) == ("T12", "L2")
    assert numbering.missing_levels(["T12", "L3"]) == ["L1", "L2"]


def test_verse_mask_read_with_level_names():
    from mvcf.read_ct import read_mask

    mask = read_mask(shared("verse_sample/sub-verse004_seg-vert_msk.nii.gz"))
    found = numbering.detect_numbering(np.unique(mask.voxels))
    assert found.name == "verse"
    assert list(found.levels.values()) == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    centroids = {e["label"]: e for e in json.loads(
        shared("verse_sample/sub-verse004_seg-subreg_ctd.json").read_text(encoding="utf-8"))[1:]}
    # VerSe's own centroid file agrees on which label is the most caudal (L5 = 24): largest Y (I axis)
    assert max(centroids, key=lambda k: centroids[k]["Y"]) == found.label_of("L5")
    measured = morphometry.measure_spine(mask, found.levels, numbering.LEVEL_ORDER)
    assert all(m.measured for m in measured.values())
    intact = [measured[level] for level in ("T11", "T12", "L2", "L3", "L4", "L5")]
    assert all(18 < h < 40 for m in intact for h in m.heights_mm)
    # this VerSe case has a collapsed L1 (visible in the mask alone): graded severe against T12 and L2
    grade = morphometry.grade_vertebra(measured["L1"], [measured["T12"], measured["L2"]])
    assert grade.grade == 3 and grade.reference == "T12+L2"
    assert all(morphometry.grade_vertebra(measured[lv], []).grade == 0 for lv in ("L2", "L3", "L4", "L5"))


def test_a_verse_numbered_mask_measures_l5_against_the_sacrum_as_totalsegmentators_does():
    """VerSe's 26 (the sacrum) was missing from its table, so L5 had no lower neighbour: its axis ran through
    L4 and itself alone, and the sample's L5 read 15.6/23.7/18.5 mm, grade 2 wedge, where the same anatomy
    under TotalSegmentator's numbering reads grade 0."""
    from mvcf.read_ct import read_mask

    mask = read_mask(SEG)
    to_verse = {26: 26, **{27 + i: 24 - i for i in range(7)}}       # S1, L5 ... T11
    verse = np.zeros_like(mask.voxels)
    for ts_value, verse_value in to_verse.items():
        verse[mask.voxels == ts_value] = verse_value
    as_verse = CTImage(verse, mask.spacing, mask.origin, mask.direction)
    scheme = numbering.detect_numbering(np.unique(verse))
    assert scheme.name == "verse" and scheme.levels[26] == "S1"
    ts = morphometry.measure_spine(mask, numbering.detect_numbering(np.unique(mask.voxels)).levels,
                                   numbering.LEVEL_ORDER)
    vs = morphometry.measure_spine(as_verse, scheme.levels, numbering.LEVEL_ORDER)
    for level in ("L1", "L2", "L3", "L4", "L5"):
        np.testing.assert_allclose(vs[level].heights_mm, ts[level].heights_mm, atol=1e-9, err_msg=level)
    assert [morphometry.grade_vertebra(m["L5"], [m["L4"]]).grade for m in (ts, vs)] == [0, 0]


# --- morphometry ---------------------------------------------------------------------------------------

def test_sample_heights_close_to_totalsegmentator_spine_report(sample_screen):
    """The report measured another model's body mask (vertebrae_pp_refined, not shipped) on the sagittal
    slice of largest height spread; we measure the shipped `total` mask on the mid-sagittal plane. Every
    height within 2 mm is not reachable here (TotalSegmentator's own rule on the shipped masks is 3 mm off
    at worst): docs/screening.md gives every number."""
    report = json.loads(shared("totalsegmentator/spine_report/spine_report.json").read_text(encoding="utf-8"))["results"]
    rows = _rows(sample_screen)
    diffs = []
    for level in ("L1", "L2", "L3", "L4", "L5"):
        for position in morphometry.POSITIONS:
            ours = rows[level][f"height_{position}_mm"]
            theirs = report[f"vertebrae_{level}_height_{position}_mm"]
            diffs.append(abs(ours - theirs))
    diffs = np.array(diffs)
    assert diffs.mean() <= 2.0, diffs
    assert np.median(diffs) <= 2.0, diffs
    assert diffs.max() <= 1.5 * 3.0, diffs           # never more than 1.5 voxels of this 3 mm CT


def _box_spine(heights, depth=30.0, width=40.0, disc=8.0, spacing=1.0):
    """A straight column of box bodies (TotalSegmentator labels T12, L1, L2 from top), each with a posterior
    arch behind a canal, on an LPS grid; heights in mm as (anterior, posterior) pairs (a wedge if unequal)."""
    nz = int(sum(max(h) for h in heights) + disc * (len(heights) + 1))
    voxels = np.zeros((nz, 80, 70), np.uint8)
    z = nz - disc
    for label, (ha, hp) in zip((32, 31, 30), heights):
        for j in range(int(depth)):
            h = ha + (hp - ha) * j / (depth - 1)
            voxels[int(round(z - h)):int(round(z)), 10 + j, 15:15 + int(width)] = label
        voxels[int(z - hp):int(z), 10 + int(depth) + 12:10 + int(depth) + 30, 28:42] = label   # arch
        z -= max(ha, hp) + disc
    return CTImage(voxels[::-1].copy(), (spacing,) * 3, (0.0, 0.0, 0.0))


def test_heights_and_grades_on_boxes():
    mask = _box_spine([(24, 24), (15, 25), (25, 25)])            # L1: anterior wedge, 40 % lower
    levels = {32: "T12", 31: "L1", 30: "L2"}
    measured = morphometry.measure_spine(mask, levels, numbering.LEVEL_ORDER)
    l1 = measured["L1"]
    assert l1.measured and l1.depth_mm == pytest.approx(30, abs=2)
    assert l1.heights_mm[0] < l1.heights_mm[2] - 7
    grade = morphometry.grade_vertebra(l1, [measured["T12"], measured["L2"]])
    assert grade.shape == "wedge" and grade.grade in (2, 3)
    normal = morphometry.grade_vertebra(measured["L2"], [l1])
    assert normal.grade == 0 and normal.shape == "normal"


def test_crush_graded_against_the_neighbours_tallest_heights():
    """A uniformly lower body has a normal own shape: only its neighbours show the loss. A neighbour with a
    20-25 % wedge (as a normal T12 may have) is still a reference; each is compared by its tallest height."""
    mask = _box_spine([(18, 25), (17, 17), (25, 25)])            # T12 wedged, L1 crushed by 32 %
    levels = {32: "T12", 31: "L1", 30: "L2"}
    measured = morphometry.measure_spine(mask, levels, numbering.LEVEL_ORDER)
    grade = morphometry.grade_vertebra(measured["L1"], [measured["T12"], measured["L2"]])
    assert grade.reference == "T12+L2"
    assert grade.loss_own < 0.05
    assert grade.loss_neighbours == pytest.approx(1 - 17 / 25, abs=0.05)
    assert grade.grade == 2 and grade.shape == "crush"
    # the wedged T12 next to the crushed L1: taller than its reference, so graded by its own shape alone
    t12 = morphometry.grade_vertebra(measured["T12"], [measured["L1"]])
    assert 0.2 < t12.loss_own < 0.25 and t12.loss_neighbours < 0
    assert t12.grade == 1 and t12.shape == "wedge"


def test_heights_do_not_depend_on_the_scanner_orientation():
    """The same column rotated 20 degrees about the left-right axis measures the same."""
    import SimpleITK as sitk

    mask = _box_spine([(24, 24), (18, 24), (24, 24)])
    image = mask.to_sitk()
    angle = np.deg2rad(20)
    rotation = sitk.Euler3DTransform()
    center = image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()])
    rotation.SetCenter(center)
    rotation.SetRotation(angle, 0, 0)
    rotated = sitk.Resample(image, image, rotation, sitk.sitkNearestNeighbor, 0)
    levels = {32: "T12", 31: "L1", 30: "L2"}
    upright = morphometry.measure_spine(mask, levels, numbering.LEVEL_ORDER)["L1"].heights_mm
    tilted = morphometry.measure_spine(CTImage.from_sitk(rotated), levels, numbering.LEVEL_ORDER)["L1"].heights_mm
    assert np.allclose(upright, tilted, atol=1.5), (upright, tilted)


@pytest.mark.parametrize("quarter_turns", [1, 2])
def test_a_patient_prone_or_on_the_side_measures_like_one_supine(quarter_turns):
    """The sample's spine turned 180 degrees about its cranio-caudal axis (a prone patient, as for a CT-guided
    biopsy) or 90 degrees (on the side): the body search started from the scanner's posterior, found the
    spinous process behind the canal and read L1-L5 as grade 3 (posterior heights 6.5-13 mm), all flagged."""
    import SimpleITK as sitk

    mask = CTImage.from_sitk(sitk.ReadImage(str(SEG)))
    levels = {31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5", 26: "S1", 32: "T12"}
    turned = CTImage(np.ascontiguousarray(np.rot90(mask.voxels, quarter_turns, axes=(1, 2))), mask.spacing,
                     mask.origin, mask.direction)
    supine = morphometry.measure_spine(mask, levels, numbering.LEVEL_ORDER)
    other = morphometry.measure_spine(turned, levels, numbering.LEVEL_ORDER)
    for level in ("L1", "L2", "L3", "L4", "L5"):
        np.testing.assert_allclose(other[level].heights_mm, supine[level].heights_mm, atol=0.05, err_msg=level)


def test_a_patient_turned_is_said_and_a_body_search_gone_astray_is_not_measured(tmp_path):
    """The sample's patient turned 90 degrees about the long axis (header rotated): heights as supine, but the
    classifier's views stay in scanner axes (L4's P(MVCF) 0.59 -> 0.99, flagged) without a word. Turned 45
    degrees, L3's body search ran along a wrong axis, 72 mm deep, and read a grade 3 crush, flagged."""
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    def turned(degrees: float) -> dict:
        t = np.radians(degrees)
        rotation = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
        paths = []
        for source in (CT, SEG):
            image = sitk.ReadImage(str(source))
            image.SetDirection(tuple((rotation @ np.reshape(image.GetDirection(), (3, 3))).ravel()))
            image.SetOrigin(tuple(rotation @ np.asarray(image.GetOrigin())))
            paths.append(tmp_path / f"{degrees:g}_{source.name}")
            sitk.WriteImage(image, str(paths[-1]))
        return screen_files(*paths, device="cpu")

    supine = turned(0.0)
    assert not any("lies turned" in w for w in supine.warnings)
    side = turned(90.0)
    said = [w for w in side.warnings if "lies turned" in w]
    assert len(said) == 1 and re.search(r"turned about (8[0-9]|9[0-9]|10[0-9]) degrees from supine", said[0]), said
    rows = _rows(turned(45.0))
    assert rows["L3"]["status"] == "not measured" and rows["L3"]["genant_grade"] is None
    assert any("front to back, deeper than any vertebral body" in n for n in rows["L3"]["notes"])


def test_a_tilted_spine_is_not_refused_for_a_fragment_out_of_order():
    """The sample's spine tilted 40 degrees forward (header rotated about L-R): T11, cut by the field of view to
    its arch (76 voxels), had its centroid 12 mm below T12's and the exam was refused as "labels swapped"."""
    import SimpleITK as sitk

    from mvcf.screen import check_level_order

    mask = CTImage.from_sitk(sitk.ReadImage(str(SEG)))
    t = np.radians(-40.0)   # in LPS; +40 degrees in the RAS of the NIfTI header
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    tilted = CTImage(mask.voxels, mask.spacing, tilt @ mask.origin, tilt @ mask.direction)
    levels = {33: "T11", 32: "T12", 31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5", 26: "S1"}
    check_level_order(tilted, levels, "totalsegmentator")
    swapped = mask.voxels.copy()   # a real swap is still refused
    swapped[mask.voxels == 31], swapped[mask.voxels == 29] = 29, 31
    with pytest.raises(MVCFError, match="out of head-to-foot order"):
        check_level_order(CTImage(swapped, mask.spacing, tilt @ mask.origin, tilt @ mask.direction), levels,
                          "totalsegmentator")


def test_genant_limits():
    assert [morphometry.genant_grade(v) for v in (0.0, 0.19, 0.2, 0.24, 0.25, 0.39, 0.4, 0.7)] == \
        [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.xfail(strict=True, reason="issue 12: not met on the vertebra-template generator v3-v6 (60 cases, seed 3, "
                   "v6: 53 % exact, 9 two grades off; graded against the vertebra's own intact heights, which no "
                   "reader has, 77 %, 2 off): docs/screening.md")
def test_genant_grade_matches_drawn_height_loss_on_synthetic_cases():
    """The issue's criterion (exact agreement >= 90 %, never two grades off) on a cohort small enough for CI;
    scripts/genant_agreement.py runs the large one for docs/screening.md. Strict: the day the grading meets
    it, the mark must go."""
    sys.path.insert(0, str(REPO / "scripts"))
    from genant_agreement import agreement

    result = agreement(12, seed=5)
    overall = result["all"]
    assert overall["graded"] == overall["n"]
    assert overall["more_than_one_off"] == 0, result["cases"]
    assert overall["exact"] >= 0.90, result["cases"]


def test_agreement_ceiling_grades_against_the_same_case_drawn_intact():
    """The ceiling in docs/screening.md: the same case drawn again without collapse (same random draws) is
    the reference, so the measured loss follows the drawn one closely (the intact heights are the target's
    own, not a neighbour's)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from genant_agreement import agreement

    result = agreement(2, seed=5, ceiling=True)
    assert result["ceiling_own_intact_heights"]["graded"] == 2
    for case in result["cases"]:
        assert abs(case["loss_vs_intact"] - case["drawn_loss"]) < 0.08, case


# --- bone density ----------------------------------------------------------------------------------------

def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Plain numpy 6-neighbour erosion, `steps` times."""
    out = mask.copy()
    for _ in range(steps):
        core = out.copy()
        core[1:] &= out[:-1]
        core[:-1] &= out[1:]
        core[:, 1:] &= out[:, :-1]
        core[:, :-1] &= out[:, 1:]
        core[:, :, 1:] &= out[:, :, :-1]
        core[:, :, :-1] &= out[:, :, 1:]
        core[0] = core[-1] = core[:, 0] = core[:, -1] = core[:, :, 0] = core[:, :, -1] = False
        out = core
    return out


def test_l1_trabecular_hu_matches_a_hand_measurement(sample_screen):
    """Hand measurement on the CT's own 3 mm voxels: the L1 label eroded by two voxels (6 mm: the thin
    posterior elements vanish), only the connected piece at the body centre."""
    import SimpleITK as sitk
    from scipy import ndimage

    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(CT))).astype(float)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(SEG))) == 31
    core = _erode(label, 2)
    pieces, _ = ndimage.label(core)
    biggest = np.bincount(pieces.ravel())[1:].argmax() + 1
    hand = hu[pieces == biggest].mean()
    ours = _rows(sample_screen)["L1"]["trabecular_hu"]
    assert abs(ours - hand) <= 15.0, (ours, hand)
    assert 80 < ours < 200


def test_a_numbering_given_against_the_labels_is_warned_of():
    """`--numbering verse` on a TotalSegmentator map screened its organs 1-25 as C1-L5 without a word."""
    from mvcf.numbering import numbering_doubt

    totalseg, verse = [5, 18, 27, 31, 32, 33, 34, 35], [18, 19, 20, 21, 22]
    assert "look like totalsegmentator numbering" in numbering_doubt("verse", totalseg)
    assert "look like verse numbering" in numbering_doubt("totalsegmentator", verse)
    assert numbering_doubt("totalsegmentator-v1", totalseg) is None and numbering_doubt("verse", verse) is None


def test_tptbox_osteoporotic_l3_flagged():
    from mvcf.screen import screen_files

    result = screen_files(shared("tptbox_sample_ct/sub-ct_label-22_ct.nii.gz"),
                          shared("tptbox_sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz"), device="cpu")
    rows = _rows(result)
    assert result.numbering == "verse"
    assert set(rows) == {"L2", "L3", "L4"}
    l3 = rows["L3"]
    assert l3["status"] == "measured" and l3["osteoporosis_flag"] and l3["trabecular_hu"] < 110
    assert rows["L2"]["status"] == "partial" and rows["L4"]["status"] == "partial"
    # the subregion mask's trabecular interior (label 50) of L3 agrees with ours
    from mvcf.read_ct import read_ct, read_mask

    ct = read_ct(shared("tptbox_sample_ct/sub-ct_label-22_ct.nii.gz"))
    vert = read_mask(shared("tptbox_sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz")).voxels == 22
    sub = read_mask(shared("tptbox_sample_ct/sub-ct_seg-subreg_label-22_msk.nii.gz")).voxels == 50
    reference = float(ct.voxels[vert & sub].mean())
    assert abs(l3["trabecular_hu"] - reference) <= 20, (l3["trabecular_hu"], reference)


def test_contrast_phase_from_sidecar_and_given(tmp_path):
    from mvcf.bone_density import contrast_phase, contrast_warning

    ct = tmp_path / "a.nii.gz"
    ct.write_bytes(b"")
    assert contrast_phase(ct) is None
    (tmp_path / "a.json").write_text(json.dumps({"ContrastBolusIngredient": "IODINE"}))
    assert contrast_phase(ct) == "contrast"
    assert "contrast-enhanced" in contrast_warning("contrast")
    assert contrast_phase(ct, shared("totalsegmentator/spine_report/contrast_phase.json")) == "native"
    assert contrast_warning("native") is None
    assert contrast_phase(ct, "Portal_Venous") == "portal-venous" and contrast_phase(ct, " NATIVE ") == "native"
    (tmp_path / "a.json").write_text("[" * 100_000 + "]" * 100_000)   # a RecursionError traceback; now unread
    assert contrast_phase(ct) is None
    with pytest.raises(MVCFError, match="has no \"phase\""):
        contrast_phase(ct, str(tmp_path / "a.json"))


@pytest.mark.parametrize("given, message", [
    ("weird", "unknown phase 'weird'"),
    ("cases.csv", "unknown phase 'cases.csv'"),
    ("absent.json", "file not found"),
    ("bad.json", 'has no "phase"'),
])
def test_an_unknown_contrast_phase_is_refused_before_the_screen(tmp_path, capsys, given, message):
    """A typo, another file or a JSON without a phase used to label the CT 'contrast-enhanced (weird)'."""
    from mvcf.cli.main import main

    (tmp_path / "bad.json").write_text('{"phase": 3}', encoding="utf-8")
    code = main(["--progress", "none", "screen", "--ct", str(CT), "--seg", str(SEG), "--contrast-phase",
                 str(tmp_path / given) if given.endswith(".json") else given])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


# --- the screen --------------------------------------------------------------------------------------------

def test_screen_sample_ct_every_vertebra_one_batch(sample_run):
    result, calls = sample_run
    rows = _rows(result)
    assert calls == [7]                               # T11 ... L5 in one forward pass (S1 is not screened)
    assert list(rows) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert rows["T11"]["status"] == "partial" and rows["T12"]["status"] == "partial"
    for level in ("L1", "L2", "L3", "L4", "L5"):
        row = rows[level]
        assert row["status"] == "measured" and row["genant_grade"] in (0, 1, 2, 3)
        assert 0 <= row["probability_malignant"] <= 1 and row["prediction"] in ("MVCF", "OVCF")
        assert row["flagged"] == (row["genant_grade"] >= 1 and row["probability_malignant"] >= result.threshold)


def _pixels_of(rgb: np.ndarray, colour: str) -> int:
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - target).max(axis=-1) <= 12).sum())


def test_overview_outlines_every_screened_vertebra_in_its_grade_colour(sample_screen):
    """The overview picture: each located vertebra lies in the curved sagittal plane (its label is sampled
    there), outlines take the grade's colour (the sample's L4 is grade 1), and a flagged row is drawn in the
    flag colour, which is absent otherwise; the result itself is not changed by rendering it."""
    import copy

    from mvcf.report.overview import FLAG_COLOUR, GRADE_COLOURS, curved_sagittal, render_overview

    rows = sample_screen.vertebrae
    hu, labels = curved_sagittal(*sample_screen.images, rows)
    assert hu.shape == labels.shape and float(hu.max()) > 300          # bone on the plane
    assert {r["label"] for r in rows if r["status"] in ("measured", "partial")} <= set(np.unique(labels).tolist())
    before = copy.deepcopy(rows)
    _, plain = render_overview(hu, labels, rows, "t", "f")
    assert rows == before
    assert _pixels_of(plain, GRADE_COLOURS[0]) > 200 and _pixels_of(plain, GRADE_COLOURS[1]) > 50
    legend = {c: _pixels_of(plain, c) for c in (FLAG_COLOUR, GRADE_COLOURS[3])}   # no grade 3 outline yet
    flagged = [dict(r, flagged=True, genant_grade=3) if r["level"] == "L2" else r for r in rows]
    _, marked = render_overview(hu, labels, flagged, "t", "f")
    assert _pixels_of(marked, FLAG_COLOUR) > legend[FLAG_COLOUR] + 50
    assert _pixels_of(marked, GRADE_COLOURS[3]) > legend[GRADE_COLOURS[3]] + 100
    assert sample_screen.to_dict().keys() == json.loads(json.dumps(sample_screen.to_dict())).keys()
    assert "images" not in sample_screen.to_dict()


def test_overview_plane_follows_a_scoliotic_spine():
    """Three bodies 25 mm apart left to right (a scoliosis no straight sagittal plane cuts through): the
    curved plane passes through each one."""
    from mvcf.report.overview import curved_sagittal

    voxels = np.full((60, 60, 60), -100.0, dtype=np.float32)
    seg = np.zeros((60, 60, 60), dtype=np.int16)
    rows = []
    for n, (label, x) in enumerate(((27, 5), (28, 30), (29, 55))):
        z = 8 + 20 * n
        voxels[z:z + 10, 25:35, x - 3:x + 3] = 300.0
        seg[z:z + 10, 25:35, x - 3:x + 3] = label
        rows.append({"level": f"L{5 - n}", "label": label, "center_lps": [float(x), 30.0, float(z + 5)]})
    ct = CTImage(voxels=voxels, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    hu, labels = curved_sagittal(ct, CTImage(voxels=seg, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)), rows)
    assert {27, 28, 29} <= set(np.unique(labels).tolist())
    assert float(hu.max()) > 250


def test_missing_and_empty_levels_are_rows_not_errors(tmp_path):
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    seg = sitk.ReadImage(str(SEG))
    array = sitk.GetArrayFromImage(seg)
    array[array == 29] = 0                            # drop L3
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(seg)
    path = tmp_path / "no_l3.nii.gz"
    sitk.WriteImage(out, str(path))
    rows = _rows(screen_files(CT, path, device="cpu"))
    assert rows["L3"]["status"] == "missing" and rows["L3"]["genant_grade"] is None
    assert rows["L2"]["status"] == "measured" and rows["L4"]["status"] == "measured"


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", "screen", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_json_and_outputs(tmp_path, small_case):
    ct, seg = small_case
    run = _cli("--ct", ct, "--seg", seg, "--out", tmp_path / "out", "--json")
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    assert {"L2", "L3", "L4"} <= {r["level"] for r in payload["vertebrae"]}
    l3 = next(r for r in payload["vertebrae"] if r["level"] == "L3")
    assert l3["status"] == "measured"
    for key in ("level", "height_anterior_mm", "height_middle_mm", "height_posterior_mm", "genant_grade",
                "trabecular_hu", "probability_malignant", "prediction"):
        assert key in l3 and l3[key] is not None
    assert payload["numbering"] == "totalsegmentator" and "disclaimer" in payload
    tsv = (tmp_path / "out" / "screen.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0].split("\t")[:3] == ["level", "label", "status"] and len(tsv) == 1 + len(payload["vertebrae"])
    assert json.loads((tmp_path / "out" / "screen.json").read_text(encoding="utf-8"))["columns"]["genant_grade"]
    from mvcf.outputs_guard import is_own_output

    assert is_own_output(tmp_path / "out" / "screen_overview.png")   # tagged, so --overwrite may replace it


def test_a_vertebra_cut_by_the_field_of_view_never_sets_the_exams_bone_density(tmp_path):
    """A body cut by the first or last slice had no heights and no grade but kept a trabecular HU (the sample's
    cut L1: 170 HU where the whole body reads 123), and the exam's bone density was read from it: "L1 170 HU:
    normal density" for a low-density spine."""
    import SimpleITK as sitk

    from mvcf.screen import exam_density, screen_files

    for source, name in ((CT, "ct.nii.gz"), (SEG, "seg.nii.gz")):   # L1 and L5 cut, their bodies in part
        sitk.WriteImage(sitk.ReadImage(str(source))[:, :, 50:96], str(tmp_path / name))
    result = screen_files(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", device="cpu")
    rows = {r["level"]: r for r in result.vertebrae}
    cut = [level for level, r in rows.items() if r["status"] == "partial"]
    assert cut == ["L1", "L5"] and rows["L3"]["trabecular_hu"] is not None
    for level in cut:
        assert rows[level]["trabecular_hu"] is None and rows[level]["density"] == ""
        assert not rows[level]["osteoporosis_flag"] and any("no trabecular HU" in n for n in rows[level]["notes"])
    assert exam_density(result.vertebrae)["status"] == "measured"


def test_a_vertebra_whose_body_the_field_of_view_cut_in_front_is_partial_not_unmeasured(tmp_path):
    """A field of view cut in front of the spine (a small reconstruction, a cropped CT) removes the bodies and
    leaves the posterior elements: such a level read "not measured (no body found)" beside cut levels that
    read "partial", as if the segmentation had failed there."""
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    for source, name in ((CT, "ct.nii.gz"), (SEG, "seg.nii.gz")):   # the sample's image rows 35.. are in front
        sitk.WriteImage(sitk.ReadImage(str(source))[:, :35, :], str(tmp_path / name))
    rows = {r["level"]: r for r in screen_files(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz",
                                                device="cpu").vertebrae}
    assert {r["status"] for r in rows.values()} == {"partial"}, {k: r["status"] for k, r in rows.items()}
    assert any("no body found" in n for r in rows.values() for n in r["notes"])
    assert all(r["trabecular_hu"] is None and r["genant_grade"] is None for r in rows.values())


def test_a_body_cut_by_the_ct_s_padding_is_partial_like_a_cropped_one(tmp_path, sample_screen):
    """A scanner writes -2000 to -3024 HU outside its reconstruction circle (a resampling fills in the same):
    the sample with its front rows from image row 40 on turned into padding (and unlabelled, as a segmenter
    leaves them) read "measured" with bodies sliced in half, L2 and L5 grade 3, where the same anatomy cropped
    there reads "partial". Padding away from the spine changes nothing."""
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    def padded(row: int, value: int = -3024) -> dict:
        ct, seg = sitk.ReadImage(str(CT)), sitk.ReadImage(str(SEG))
        hu, labels = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(seg)
        hu[:, row:, :], labels[:, row:, :] = value, 0
        for array, like, name in ((hu, ct, "ct.nii.gz"), (labels, seg, "seg.nii.gz")):
            image = sitk.GetImageFromArray(array)
            image.CopyInformation(like)
            sitk.WriteImage(image, str(tmp_path / name))
        return _rows(screen_files(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", device="cpu"))

    cut = padded(40)
    assert {r["status"] for r in cut.values()} == {"partial"}, {k: r["status"] for k, r in cut.items()}
    assert all(r["genant_grade"] is None and r["trabecular_hu"] is None for r in cut.values())
    edge = padded(40, int(morphometry.PADDING_HU))   # exactly the limit is padding too (read -492 HU as bone)
    assert {r["status"] for r in edge.values()} == {"partial"}, {k: r["status"] for k, r in edge.items()}
    far = padded(60)
    for level, row in _rows(sample_screen).items():
        assert far[level]["status"] == row["status"], level
        for key in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "genant_grade",
                    "trabecular_hu"):
            assert far[level][key] == pytest.approx(row[key]), (level, key)


def test_air_inside_a_body_gives_no_trabecular_hu(tmp_path, sample_screen):
    """Air over the front of the bodies (a cut of the field of view filled with -1024, or a mask shifted off
    the bone) read as bone: L3 -310 HU, L4 -373 HU, L2 2 HU, all "osteoporosis likely", without a word."""
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    ct, seg = sitk.ReadImage(str(CT)), sitk.ReadImage(str(SEG))
    hu, labels = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(seg)
    front = int(np.argwhere(labels == 30)[:, 1].max())   # image row of L2's front (the sample's rows run anterior)
    hu[:, front - 3:, :] = -1024
    image = sitk.GetImageFromArray(hu)
    image.CopyInformation(ct)
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    rows = _rows(screen_files(tmp_path / "ct.nii.gz", SEG, device="cpu"))
    hit = [level for level, row in rows.items() if any("reads below -400 HU, which no bone does" in n
                                                        for n in row["notes"])]
    assert {"L2", "L3", "L4"} <= set(hit), hit
    for level in hit:
        assert rows[level]["trabecular_hu"] is None and rows[level]["density"] == "", level
        assert not rows[level]["osteoporosis_flag"], level
    for level, row in _rows(sample_screen).items():   # the sample itself: no body holds air
        assert not any("no bone does" in n for n in row["notes"]), level


def test_stray_voxels_of_a_label_do_not_move_any_height(tmp_path, sample_screen):
    """One voxel of L1's label 129 mm away: the classifier's location left it out (with a note), but the
    morphometry took it into L1's centroid and axis, so L1 and L2 read other heights (L2 25.8 -> 26.6 mm)."""
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    seg = sitk.ReadImage(str(SEG))
    labels = sitk.GetArrayFromImage(seg)
    labels[100, 5, 5] = 31
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(seg)
    sitk.WriteImage(image, str(tmp_path / "seg.nii.gz"))
    rows, before = _rows(screen_files(CT, tmp_path / "seg.nii.gz", device="cpu")), _rows(sample_screen)
    for level, row in before.items():
        for key in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "genant_grade"):
            assert rows[level][key] == pytest.approx(row[key]), (level, key)
    assert any("left out 1 voxels" in n for n in rows["L1"]["notes"]), rows["L1"]["notes"]


def test_levels_out_of_order_are_refused_and_two_vertebrae_under_one_label_are_not_measured(tmp_path, sample_screen):
    """Swapped L1 and L3 labels were screened as named (the real L1 flagged as "L3"); L1 and L2 under one label
    read as one normal L1, 46-51 mm tall; a mask without S1 read the normal L5 as a grade 2 wedge, without a word
    in any of them."""
    import SimpleITK as sitk

    from mvcf.screen import screen_files

    def relabelled(change) -> tuple:
        seg = sitk.ReadImage(str(SEG))
        labels = sitk.GetArrayFromImage(seg)
        change(labels)
        image = sitk.GetImageFromArray(labels)
        image.CopyInformation(seg)
        path = tmp_path / "seg.nii.gz"
        sitk.WriteImage(image, str(path))
        return CT, path

    def swap(labels):
        l1, l3 = labels == 31, labels == 29
        labels[l1], labels[l3] = 29, 31

    with pytest.raises(MVCFError, match=r"^the segmentation's levels are out of head-to-foot order: L1 lies 34 mm "
                                        r"below L2 \(LPS z 315 vs 349 mm\): labels swapped, the wrong numbering"):
        screen_files(*relabelled(swap), device="cpu")

    def merge(labels):
        labels[labels == 30] = 31

    rows = _rows(screen_files(*relabelled(merge), device="cpu"))
    assert rows["L1"]["status"] == "not measured" and rows["L1"]["genant_grade"] is None
    assert any(n.startswith("the body measures 51 mm tall, more than any vertebral body") for n in rows["L1"]["notes"])
    assert rows["L2"]["status"] == "missing"
    # nor classified: its centroid lies between the two (a P of neither was shown, 0.325 for L2+L3)
    assert rows["L1"]["probability_malignant"] is None and rows["L1"]["prediction"] is None
    assert "not classified: the label seems to hold more than one vertebra" in rows["L1"]["notes"]

    def no_sacrum(labels):
        labels[labels == 26] = 0

    l5 = _rows(screen_files(*relabelled(no_sacrum), device="cpu"))["L5"]
    assert any(n.startswith("no S1 label below L5") for n in l5["notes"])
    assert not any(n.startswith("no S1 label") for n in _rows(sample_screen)["L5"]["notes"])

    def no_l3(labels):
        labels[labels == 29] = 0

    gap = _rows(screen_files(*relabelled(no_l3), device="cpu"))
    assert any(n.startswith("the level above is missing from the segmentation: the cranio-caudal axis runs "
                            "through L2, across the gap") for n in gap["L4"]["notes"]), gap["L4"]["notes"]
    assert any(n.startswith("the level below is missing from the segmentation: the cranio-caudal axis runs "
                            "through L4") for n in gap["L2"]["notes"]), gap["L2"]["notes"]
    assert gap["L3"]["status"] == "missing"
    assert not any("is missing from the segmentation" in n for r in _rows(sample_screen).values() for n in r["notes"])


def test_an_interrupted_report_leaves_no_table_either(tmp_path, small_case, monkeypatch, capsys):
    """Ctrl-C (or a failure) while the case report or DICOM objects are written: the run exits 130 and --out
    gets no screen.tsv/screen.json (the table was written first before, and stayed)."""
    from mvcf.cli import outputs as case_outputs
    from mvcf.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(case_outputs, "write_outputs", interrupted)
    ct, seg = small_case
    out = tmp_path / "out"
    code = main(["--progress", "none", "screen", "--ct", str(ct), "--seg", str(seg), "--out", str(out),
                 "--report", str(tmp_path / "report")])
    assert code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    assert not (out / "screen.tsv").exists() and not (out / "screen.json").exists()


def test_cli_bad_input_one_line(tmp_path):
    import SimpleITK as sitk

    seg = sitk.ReadImage(str(SEG))
    shifted = sitk.Image(seg)
    shifted.SetOrigin(tuple(v + 7.0 for v in seg.GetOrigin()))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    organs = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(seg) > 0, 52, 0).astype(np.uint8))
    organs.CopyInformation(seg)
    sitk.WriteImage(organs, str(tmp_path / "organs.nii.gz"))
    cases = [((CT, tmp_path / "shifted.nii.gz"), "on another grid than the CT"),
             ((CT, tmp_path / "organs.nii.gz"), "no vertebra labels"),
             ((CT, SEG, "--numbering", "nnunet"), "unknown numbering")]
    for (ct, seg_path, *extra), message in cases:
        run = _cli("--ct", ct, "--seg", seg_path, *extra, "--out", tmp_path / "never")
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], run.stderr
        assert "np.float64" not in lines[0]  # the grid's numbers as numbers, not NumPy reprs
    assert not (tmp_path / "never").exists()


def test_a_mask_listing_the_cts_voxels_in_another_axis_order_is_screened_as_it_is(tmp_path, sample_screen):
    """A TotalSegmentator NIfTI beside a DICOM CT holds the CT's very voxels in RAS order where SimpleITK
    reads the DICOM in LPS order: refused as "on another grid than the CT" (resample it), although nothing
    needs resampling. Every axis order of the same voxels is screened like the CT's own; a mask moved by
    half a voxel is still refused."""
    import SimpleITK as sitk

    from mvcf.ctimage import CTImage, on_lattice_of
    from mvcf.screen import screen_files

    seg = sitk.ReadImage(str(SEG))
    reference = CTImage.from_sitk(seg)
    for orient in ("LPS", "PIR", "SLA", "ILP"):
        turned = CTImage.from_sitk(sitk.DICOMOrient(seg, orient))
        assert turned.size_ijk != reference.size_ijk or not np.allclose(turned.direction, reference.direction)
        np.testing.assert_array_equal(on_lattice_of(turned, reference).voxels, reference.voxels)
    half = sitk.Image(seg)
    half.SetOrigin(tuple(np.asarray(seg.GetOrigin()) + [1.5, 0.0, 0.0]))
    assert on_lattice_of(CTImage.from_sitk(half), reference) is None
    sitk.WriteImage(sitk.DICOMOrient(seg, "LPS"), str(tmp_path / "lps.nii.gz"))
    result = screen_files(CT, tmp_path / "lps.nii.gz", device="cpu")
    def without_p(rows):   # the module's run is torch's, this one ONNX Runtime's: equal to 1e-5
        return [{k: v for k, v in r.items() if k != "probability_malignant"} for r in rows]

    assert without_p(result.vertebrae) == without_p(sample_screen.vertebrae)
    for mine, theirs in zip(result.vertebrae, sample_screen.vertebrae):
        assert (mine["probability_malignant"] is None) == (theirs["probability_malignant"] is None)
        if mine["probability_malignant"] is not None:
            assert mine["probability_malignant"] == pytest.approx(theirs["probability_malignant"], abs=1e-5)
    sitk.WriteImage(half, str(tmp_path / "half.nii.gz"))
    with pytest.raises(MVCFError, match="on another grid than the CT"):
        screen_files(CT, tmp_path / "half.nii.gz", device="cpu")


def test_manifest_resumable_and_sharded(tmp_path, small_case):
    ct, seg = small_case
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,ct,seg\na,{ct},{seg}\nb,{ct},{tmp_path / 'missing.nii.gz'}\n")
    out = tmp_path / "out"
    env_run = subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", "screen", "--manifest",
                              str(manifest), "--out", str(out), "--json", "--allow-outside-root"], capture_output=True, text=True,
                             timeout=600, env={**__import__("os").environ, "WORLD_SIZE": "2", "RANK": "1"})
    assert env_run.returncode == 2 and "file not found" in env_run.stderr       # shard 1 holds only case b
    assert (out / "errors" / "b.txt").is_file() and not (out / "a").exists()
    index = (out / "screen_index.tsv").read_text(encoding="utf-8").splitlines()   # the whole manifest, on disk
    assert [line.split("\t")[:2] for line in index[1:]] == [["b", "failed"], ["a", "pending"]]
    run = _cli("--manifest", manifest, "--out", out, "--json", "--allow-outside-root")
    summary = json.loads(run.stdout)
    assert run.returncode == 0 and summary["screened"] == 1 and summary["failed"][0]["case_id"] == "b"
    assert (out / "a" / "screen.json").is_file() and (out / "a" / "screen.tsv").is_file()
    assert (out / "a" / "screen_overview.png").is_file()
    assert summary["index"] == str(out / "screen_index.tsv")
    assert summary["index_counts"] == {"cases": 2, "screened": 1, "flagged": 0, "collapsed": 0,
                                       "osteoporosis_likely": 0, "failed": 1, "pending": 0, "stale": 0}
    first = json.loads((out / "screen_index.json").read_text(encoding="utf-8"))["cases"][0]
    case_a = json.loads((out / "a" / "screen.json").read_text(encoding="utf-8"))
    assert first["case_id"] == "a" and first["status"] == "screened" and first["priority"] == 4
    assert first["measured"] == sum(r["status"] == "measured" for r in case_a["vertebrae"]) >= 3
    assert first["density_level"] == "L2" and first["trabecular_hu"] == next(
        r["trabecular_hu"] for r in case_a["vertebrae"] if r["level"] == "L2")     # L1 is cut: the next level
    again = json.loads(_cli("--manifest", manifest, "--out", out, "--json", "--allow-outside-root").stdout)
    assert again["skipped_finished"] == 1 and again["screened"] == 0
    assert again["skipped_with_another_model"] == 0 and again["model"]["sha256"] and again["backend"]
    text = _cli("--manifest", manifest, "--out", out, "--allow-outside-root")      # the summary for people
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert "shard 1/1: screened 0, skipped 1 finished, failed 1 of 2 cases" in text.stdout
    assert f"index of all 2 cases, those to read first at the top: {out / 'screen_index.tsv'}" in text.stdout
    # a finished case screened with other weights (a case folder of an earlier mvcf, which recorded only the
    # weights, in screen.json) is kept on a rerun, and the rerun says so
    recorded = json.loads((out / "a" / "inputs.json").read_text(encoding="utf-8"))
    (out / "a" / "inputs.json").write_text(json.dumps({k: recorded[k] for k in ("ct", "seg")}), encoding="utf-8")
    finished = json.loads((out / "a" / "screen.json").read_text(encoding="utf-8"))
    finished["model"]["sha256"] = "0" * 64
    (out / "a" / "screen.json").write_text(json.dumps(finished), encoding="utf-8")
    rerun = _cli("--manifest", manifest, "--out", out, "--json", "--allow-outside-root")
    assert json.loads(rerun.stdout)["skipped_with_another_model"] == 1
    assert "warning: 1 finished case(s)" in rerun.stderr and "this run's model differs (e.g. a: screened with " \
        "another model (other weights: mvcf-demo" in rerun.stderr
    # a damaged screen.json, a case folder without one, or one whose table or picture was deleted since (it
    # counted as finished, and the file never came back) is not a finished case: screened again, replaced
    for damage in (lambda: (out / "a" / "screen.json").write_text('{"vertebrae": [1]}', encoding="utf-8"),
                   lambda: (out / "a" / "screen.json").unlink(), lambda: (out / "a" / "screen.tsv").unlink(),
                   lambda: (out / "a" / "screen_overview.png").unlink()):
        damage()
        repaired = _cli("--manifest", manifest, "--out", out, "--json", "--allow-outside-root")
        assert json.loads(repaired.stdout)["screened"] == 1, repaired.stderr
        assert json.loads((out / "a" / "screen.json").read_text(encoding="utf-8"))["vertebrae"][0]["level"]
        assert all((out / "a" / name).is_file() for name in ("screen.tsv", "screen_overview.png", "inputs.json"))


def test_a_case_another_run_finished_meanwhile_is_not_screened_again(tmp_path, small_case, monkeypatch, capsys):
    """Two runs of one shard (a requeued Slurm task while the first still runs): a case the other run finished
    after this one started is skipped, not screened again and its folder not replaced."""
    import mvcf.fileio
    import mvcf.screen
    from mvcf.cli.main import main

    ct, seg = small_case
    shutil.copy(seg, tmp_path / "seg_b.nii.gz")   # one exam under two case ids is refused
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,ct,seg\na,{ct},{seg}\nb,{ct},{tmp_path / 'seg_b.nii.gz'}\n")
    out = tmp_path / "out"
    screened, real = [], mvcf.screen.screen_files

    def screen_and_let_the_other_run_finish_b(*args, **kwargs):
        result = real(*args, **kwargs)
        screened.append(args[0])
        if len(screened) == 1:   # meanwhile the other run writes case b, as this run's own code would
            with mvcf.fileio.atomic_dir(out / "b") as folder:
                mvcf.screen.write_outputs(result, folder)
        return result

    monkeypatch.setattr(mvcf.screen, "screen_files", screen_and_let_the_other_run_finish_b)
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(out), "--json",
                 "--allow-outside-root"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and len(screened) == 1
    assert summary["screened"] == 1 and summary["finished_by_another_run"] == 1 and summary["skipped_finished"] == 1
    assert summary["index_counts"]["screened"] == 2 and summary["failed"] == []


def test_one_exam_under_two_case_ids_is_refused(tmp_path, small_case, capsys):
    """The same CT and segmentation (also through a link) under two case ids were screened and counted twice
    in the index, without a word (a training manifest refuses the like)."""
    from mvcf.cli.main import main

    ct, seg = small_case
    (tmp_path / "link.nii.gz").symlink_to(seg)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,ct,seg\na,{ct},{seg}\nb,{ct},{tmp_path / 'link.nii.gz'}\n")
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                 "--allow-outside-root"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "line 3: case 'b' names the CT and segmentation of case 'a'" in err
    assert not (tmp_path / "out").exists()


def test_manifest_rows_get_the_cohort_row_checks_before_anything_is_written(tmp_path, capsys):
    """NUL bytes, `../` and absolute paths outside the manifest's folder: refused by cohort_checks, every bad
    row in one line, before --out is created (they were screened, or failed case by case into --out)."""
    from mvcf.cli.main import main

    folder = tmp_path / "cohort"
    folder.mkdir()
    manifest = folder / "cases.csv"
    manifest.write_text(f"case_id,ct,seg\na,ct\x00.nii.gz,seg.nii.gz\nb,../ct.nii.gz,seg.nii.gz\n"
                        f"c,{CT},{SEG}\nerrors,ct.nii.gz,seg.nii.gz\nScreen_Index.TSV,ct.nii.gz,seg.nii.gz\n"
                        f"\"new\nline\",ct.nii.gz,seg.nii.gz\n{'é' * 101},ct.nii.gz,seg.nii.gz\n"
                        f"CaseA,ct.nii.gz,seg.nii.gz\ncasea,ct.nii.gz,seg.nii.gz\n", encoding="utf-8")
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "line 2: ct holds a NUL byte" in err and "line 3: ct ../ct.nii.gz leads outside" in err
    assert f"line 4: ct {CT} leads outside the manifest's folder (an absolute path" in err
    assert "line 5: case_id 'errors' is the name of a file or folder the run writes into --out" in err
    assert "line 6: case_id 'Screen_Index.TSV' is the name of a file" in err
    assert err.count("\n") == 1 and "8 bad row(s)" in err and err.rstrip().endswith("...")  # the first 5 named
    manifest.write_text(f"case_id,ct,seg\n\"new\nline\",ct.nii.gz,seg.nii.gz\n{'é' * 101},ct.nii.gz,seg.nii.gz\n"
                        f"CaseA,ct.nii.gz,seg.nii.gz\ncasea,ct.nii.gz,seg.nii.gz\n", encoding="utf-8")
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "case_id 'new\\nline' holds a control character" in err
    assert "is 202 bytes long; a folder name takes at most 200" in err
    assert "case_id 'casea' repeats (letter case aside" in err
    assert not (tmp_path / "out").exists()
    # an unknown numbering cell made --out and failed only when its case came up
    manifest.write_text("case_id,ct,seg,numbering\na,ct.nii.gz,seg.nii.gz,foo\nb,ct.nii.gz,seg.nii.gz,VerSe\n"
                        "c,ct.nii.gz,seg.nii.gz,Auto\n", encoding="utf-8")
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1 bad row(s): line 2: unknown numbering 'foo'" in err
    assert not (tmp_path / "out").exists()


def test_a_screen_manifest_row_with_more_cells_than_the_header_is_refused(tmp_path, capsys):
    """A path with an unquoted comma split into surplus cells that were dropped in silence."""
    from mvcf.cli.main import main

    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,ct,seg\na,scan,1.nii.gz,seg.nii.gz\n", encoding="utf-8")
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "line 2: 4 cells under a header of 3 columns (quote a cell that holds a comma" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("header, said", [
    ("case_id,ct,seg,mask", "has both a 'seg' and a 'mask' column; keep one"),   # mask was ignored in silence
    ("case_id,ct", "needs the column(s) seg (or mask) (has case_id, ct; names are lower case)"),   # said "mask"
    ("Case_ID,CT,SEG", "needs the column(s) case_id, ct, seg (or mask)"),
])
def test_a_screen_manifest_header_is_named_as_the_help_names_it(header, said, tmp_path, capsys):
    from mvcf.cli.main import main

    manifest = tmp_path / "cases.csv"
    manifest.write_text(header + "\n" + ",".join(["a"] + ["x.nii.gz"] * header.count(",")) + "\n", encoding="utf-8")
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "out").exists()


def test_out_is_never_an_input_or_a_folder_of_the_users(tmp_path, capsys):
    """screen's --out (one CT and --manifest), --report and --dicom-out go through outputs_guard."""
    from mvcf.cli.main import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "screen.tsv").write_text("my own table\n")
    manifest = tmp_path / "m" / "cases.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"case_id,ct,seg\na,{CT},{SEG}\n")
    cases = [(["--ct", CT, "--seg", SEG, "--out", mine], "holds files mvcf did not write"),
             (["--ct", CT, "--seg", SEG, "--out", mine, "--overwrite"], "holds files mvcf did not write"),
             (["--ct", CT, "--seg", SEG, "--out", SAMPLE], "holds the input"),
             (["--ct", CT, "--seg", SEG, "--report", SAMPLE], "holds the input"),
             (["--ct", CT, "--seg", SEG, "--report", CT], "is an input of this run"),
             (["--ct", CT, "--seg", SEG, "--dicom-out", SEG], "is an input of this run"),
             (["--manifest", manifest, "--out", mine, "--allow-outside-root"], "holds files mvcf did not write")]
    for extra, message in cases:
        code = main(["--progress", "none", "screen", *map(str, extra)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, (extra, err)
    assert (mine / "screen.tsv").read_text(encoding="utf-8") == "my own table\n" and sorted(p.name for p in mine.iterdir()) == [
        "screen.tsv"]


def test_shard_environment(monkeypatch):
    from mvcf.cli.screen import shard

    for name in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                 "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP"):
        monkeypatch.delenv(name, raising=False)
    assert shard() == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert shard() == (1, 3)
    # --array=1-5:2 (tasks 1, 3, 5): ran as shards 0, 2 and "4 of 3", and shard 1's cases were never screened
    for name, value in (("MIN", "1"), ("MAX", "5"), ("STEP", "2"), ("COUNT", "3")):
        monkeypatch.setenv(f"SLURM_ARRAY_TASK_{name}", value)
    assert [monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task) or shard() for task in ("1", "3", "5")] == \
        [(0, 3), (1, 3), (2, 3)]
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "9")     # --array=1,3,9: a list, not a range
    with pytest.raises(MVCFError, match="is not a range with one step"):
        shard()
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")     # outside 1-5: was "shard 3 of 3 is not a valid shard"
    with pytest.raises(MVCFError, match=r"SLURM_ARRAY_TASK_ID=7 is not a task of the array \(tasks 1-5, step 2\)"):
        shard()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    # torchrun inside each array task splits the task's share: RANK/WORLD_SIZE won and the Slurm variables
    # were dropped, so every task of the array screened the whole manifest
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert shard() == (2 * 4 + 2, 3 * 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(MVCFError, match=r"RANK=4 with WORLD_SIZE=4 is no process of the job"):
        shard()
    monkeypatch.setenv("RANK", "")    # WORLD_SIZE=4 alone ran shard 1/4 as if it were the whole job
    with pytest.raises(MVCFError, match="WORLD_SIZE is set but RANK is not"):
        shard()
    for name in ("RANK", "WORLD_SIZE"):   # an empty RANK beside an array: the array alone, not the whole manifest
        monkeypatch.setenv(name, "")
    assert shard() == (2, 3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "")   # a count alone ran as the whole job (WORLD_SIZE alone is refused)
    with pytest.raises(MVCFError, match="SLURM_ARRAY_TASK_COUNT is set but SLURM_ARRAY_TASK_ID is not"):
        shard()
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                 "SLURM_ARRAY_TASK_STEP"):
        monkeypatch.delenv(name)
    for rank in ("1_0", "\u0661", "0x1", "1.0"):   # int() took '1_0' as 10 and the Arabic-Indic one as 1
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "20")
        with pytest.raises(MVCFError, match="is not an integer"):
            shard()


def test_an_interrupt_while_the_table_is_written_takes_the_report_away_too(tmp_path, small_case, monkeypatch,
                                                                          capsys):
    """Ctrl-C while screen.tsv is written, after the case report is done: exit 130, and neither the table
    nor the report stays (a run's outputs come all or none)."""
    import mvcf.screen
    from mvcf.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mvcf.screen, "write_outputs", interrupted)
    ct, seg = small_case
    code = main(["--progress", "none", "screen", "--ct", str(ct), "--seg", str(seg), "--out", str(tmp_path / "out"),
                 "--report", str(tmp_path / "deep" / "report")])
    assert code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == []


def _screened(rows: list) -> dict:
    return {"vertebrae": rows, "model": {"name": "m", "version": "1", "sha256": "ab" * 32}, "warnings": [],
            "contrast_phase": None}


def _vertebra(level, grade=0, p=0.1, flagged=False, hu=150.0, status="measured"):
    return {"level": level, "genant_grade": grade, "probability_malignant": p, "flagged": flagged,
            "trabecular_hu": hu, "density": "low density" if hu > 110 else "osteoporosis likely",
            "osteoporosis_flag": hu <= 110, "status": status}


def test_the_archive_index_puts_the_cases_to_read_first_at_the_top(tmp_path):
    """The exam-level index of a manifest screen: flagged cases first (the more malignant-looking collapse
    first), then collapsed ones (worse grade first), then osteoporosis likely, then the rest; failed and
    pending cases last. Built from the folders on disk, so any shard or rerun writes the same index."""
    from mvcf.screen_index import INDEX_JSON, INDEX_NAMES, RESERVED_NAMES, index_rows, write_index

    cases = {
        "plain": [_vertebra("L1"), _vertebra("L2")],
        "porotic": [_vertebra("T12", hu=150.0), _vertebra("L1", hu=95.0)],
        "mild": [_vertebra("L1", grade=1, p=0.2)],
        "mild_likelier": [_vertebra("L1", grade=1, p=0.58)],   # below the threshold: the grade orders these
        "severe": [_vertebra("L1", grade=3, p=0.3)],
        "flag_low": [_vertebra("L1", grade=2, p=0.7, flagged=True)],
        "flag_high": [_vertebra("T12", grade=1, p=0.95, flagged=True), _vertebra("L1", grade=2, p=0.4)],
        "thoracic": [_vertebra("T11", hu=100.0)],          # no L1-L4: the exam's density is read at T11
    }
    cases['<i>odd & "name"'] = [_vertebra("L1")]          # escaped in the page, quoted in its links
    for case_id, rows in cases.items():
        (tmp_path / case_id).mkdir()
        (tmp_path / case_id / "screen.json").write_text(json.dumps(_screened(rows)), encoding="utf-8")
    (tmp_path / "flag_high" / "screen_overview.png").write_bytes(b"\x89PNG")
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "broken.txt").write_text("cannot read the CT\nmore\n", encoding="utf-8")
    for name, text in (("garbled", "{not json"), ("foreign", "[]"), ("odd", '{"vertebrae": [1, 2]}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "screen.json").write_text(text, encoding="utf-8")
    ids = ["waiting", "broken", "garbled", "foreign", "odd", *cases]
    rows = index_rows(tmp_path, ids)
    assert [r["case_id"] for r in rows] == ["flag_high", "flag_low", "severe", "mild_likelier", "mild", "porotic",
                                            "thoracic", "plain", '<i>odd & "name"', "broken", "garbled", "foreign",
                                            "odd", "waiting"]
    by_id = {r["case_id"]: r for r in rows}
    assert by_id["flag_high"]["flagged"] == ["T12"] and by_id["flag_high"]["collapsed"] == ["T12", "L1"]
    assert by_id["flag_high"]["max_probability_collapsed"] == 0.95 and by_id["flag_high"]["worst_grade"] == 2
    assert by_id["porotic"]["density_level"] == "L1" and by_id["porotic"]["osteoporosis_flag"] is True
    assert by_id["thoracic"]["density_level"] == "T11" and by_id["thoracic"]["priority"] == 3
    assert by_id["plain"]["priority"] == 4 and by_id["plain"]["osteoporosis_flag"] is False
    assert by_id["broken"]["error"] == "cannot read the CT" and by_id["waiting"]["status"] == "pending"
    for name in ("garbled", "foreign", "odd"):   # not a screen result: failed, and screened again next time
        assert by_id[name]["status"] == "failed" and "the next run screens the case again" in by_id[name]["error"]
    assert by_id["plain"]["model"] == "m 1 " + "ab" * 6
    (tsv, _, _), counts = write_index(tmp_path, ids)
    assert counts == {"cases": 14, "screened": 9, "flagged": 2, "collapsed": 5, "osteoporosis_likely": 2,
                      "failed": 4, "pending": 1, "stale": 0}
    assert by_id["flag_high"]["overview"] == "flag_high/screen_overview.png" and by_id["plain"]["overview"] is None
    lines = tsv.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t")[:3] == ["case_id", "status", "priority"] and len(lines) == 15
    assert lines[1].split("\t")[3] == "T12" and all(line.count("\t") == lines[0].count("\t") for line in lines)
    assert json.loads((tmp_path / INDEX_JSON).read_text(encoding="utf-8"))["disclaimer"]
    assert {*INDEX_NAMES, "errors"} == set(RESERVED_NAMES)   # no case folder can take their names
    # the page to look through: the same order, the picture beside its case, names escaped, the disclaimer
    from html.parser import HTMLParser

    from mvcf import RESEARCH_USE_DISCLAIMER

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.images, self.open = [], [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "a" and not attrs["href"].endswith(".png"):
                self.links.append(attrs["href"])
            if tag == "img":
                self.images.append(attrs)
            if tag in ("table", "tr", "td", "a"):
                self.open.append(tag)

        def handle_endtag(self, tag):
            if tag in ("table", "tr", "td", "a"):
                assert self.open.pop() == tag

    html = (tmp_path / "screen_index.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    from urllib.parse import unquote

    assert [unquote(link) for link in page.links] == [f"{r['case_id']}/" for r in rows if r["status"] == "screened"] \
        + ["errors/broken.txt"] and not page.open     # a damaged case has no error file; a pending one no link
    assert page.images == [{"src": "flag_high/screen_overview.png", "loading": "lazy", "alt": "overview of flag_high"}]
    assert "<i>odd" not in html and "&lt;i&gt;odd &amp; &quot;name&quot;" in html
    from html import escape

    assert escape(RESEARCH_USE_DISCLAIMER) in html


def test_an_interrupted_manifest_run_still_writes_the_index(tmp_path, small_case, monkeypatch, capsys):
    """Ctrl-C, or the SIGTERM of a Slurm time limit, in the middle of a manifest: exit 130, and the index says
    where the archive stands (the finished case screened, the rest pending) instead of being missing or stale."""
    import mvcf.screen
    from mvcf.cli.main import main

    real, calls = mvcf.screen.screen_files, []

    def second_is_interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mvcf.screen, "screen_files", second_is_interrupted)
    ct, seg = small_case
    manifest = tmp_path / "cases.csv"
    for name in ("second", "third"):   # one exam under two case ids is refused
        shutil.copy(seg, tmp_path / f"{name}.nii.gz")
    manifest.write_text(f"case_id,ct,seg\nfirst,{ct},{seg}\nsecond,{ct},{tmp_path / 'second.nii.gz'}\n"
                        f"third,{ct},{tmp_path / 'third.nii.gz'}\n")
    out = tmp_path / "out"
    code = main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(out),
                 "--allow-outside-root"])
    assert code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    index = json.loads((out / "screen_index.json").read_text(encoding="utf-8"))
    assert [(r["case_id"], r["status"]) for r in index["cases"]] == \
        [("first", "screened"), ("second", "pending"), ("third", "pending")]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name not in (".mvcf-output",
                                                                                          ".mvcf-index.lock")]


def test_bad_manifest_files_are_one_line_and_a_fifo_never_hangs_the_batch(tmp_path, small_case, capsys):
    """Found by a hostile sweep: a manifest that is not UTF-8, a cell over the csv module's 131072
    characters and a symlink loop as a path gave tracebacks (exit 1); a FIFO as a case's CT blocked the run
    for ever, deaf to Ctrl-C and SIGTERM."""
    import os

    from mvcf.cli.main import main

    ct, seg = small_case
    cases = {"binary.csv": b"case_id,ct,seg\n\xff\xfe\x8b,a,b\n",
             "big.csv": f'case_id,ct,seg\na,"{"x" * 140000}",b\n'.encode(),
             "twice.csv": b"case_id,ct,seg,SEG\na,a,b,c\n"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "loop1.nii.gz").symlink_to("loop2.nii.gz")
    (tmp_path / "loop2.nii.gz").symlink_to("loop1.nii.gz")
    (tmp_path / "loop.csv").write_text(f"case_id,ct,seg\nloop,loop1.nii.gz,{seg}\n")
    for name, message in [("binary.csv", "is not a UTF-8 CSV file"), ("big.csv", "is not a valid CSV file"),
                          ("loop.csv", "ct loop1.nii.gz: cannot resolve the path"),
                          ("twice.csv", "its header names the column 'seg' twice")]:
        code = main(["--progress", "none", "screen", "--manifest", str(tmp_path / name), "--out",
                     str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, (name, err)
    assert not (tmp_path / "out").exists()
    os.mkfifo(tmp_path / "fifo.nii.gz")
    (tmp_path / "fifo.csv").write_text(f"case_id,ct,seg\nfifo,{tmp_path / 'fifo.nii.gz'},{seg}\ngood,{ct},{seg}\n")
    run = _cli("--manifest", tmp_path / "fifo.csv", "--out", tmp_path / "out", "--json", "--allow-outside-root")
    summary = json.loads(run.stdout)
    assert run.returncode == 0 and summary["screened"] == 1
    assert "not a regular file" in summary["failed"][0]["error"] and summary["failed"][0]["case_id"] == "fifo"


def test_a_rerun_says_which_finished_cases_were_screened_from_other_files(tmp_path, small_case):
    """A case whose CT was replaced (or whose manifest row names another file) kept its old result with no
    word, and the index counted it as screened from the manifest's files."""
    import shutil

    ct, seg = small_case
    shutil.copy(ct, tmp_path / "ct.nii.gz")
    shutil.copy(seg, tmp_path / "seg.nii.gz")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,ct,seg\na,ct.nii.gz,seg.nii.gz\n")
    out = tmp_path / "out"
    assert _cli("--manifest", manifest, "--out", out).returncode == 0
    assert set(json.loads((out / "a" / "inputs.json").read_text())) == {"ct", "seg", "settings"}
    again = _cli("--manifest", manifest, "--out", out, "--json")
    assert json.loads(again.stdout)["skipped_with_other_files"] == 0 and "warning" not in again.stderr
    os_stat = (tmp_path / "ct.nii.gz").stat()
    import os

    os.utime(tmp_path / "ct.nii.gz", ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns + 10**9))   # written again
    rerun = _cli("--manifest", manifest, "--out", out, "--json")
    assert json.loads(rerun.stdout)["skipped_with_other_files"] == 1
    assert "1 finished case(s)" in rerun.stderr and "the manifest names other files now (e.g. a: its CT or " \
        "segmentation changed since)" in rerun.stderr
    index = json.loads((out / "screen_index.json").read_text(encoding="utf-8"))
    assert index["cases"][0]["stale"] == "its CT or segmentation changed since" and index["counts"]["stale"] == 1
    assert "kept from an earlier run: its CT or segmentation changed since" in \
        (out / "screen_index.html").read_text(encoding="utf-8")


def test_a_rerun_marks_finished_cases_screened_with_another_threshold_or_numbering(tmp_path, small_case):
    """A bundle with a new threshold (same weights), another --numbering or --contrast-phase kept every
    finished case with no word (only the weights were compared), and the index showed the old calls as the
    archive's: each is now recorded per case, warned about, counted and marked in the index."""
    import shutil

    from mvcf.inference import default_model_path

    ct, seg = small_case
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,ct,seg\na,{ct},{seg}\n")
    out = tmp_path / "out"
    assert _cli("--manifest", manifest, "--out", out, "--allow-outside-root").returncode == 0
    assert set(json.loads((out / "a" / "inputs.json").read_text())["settings"]) == \
        {"numbering", "contrast_phase", "model"}
    bundle = shutil.copytree(default_model_path(), tmp_path / "recalibrated")
    card = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    card.update(threshold=0.5, version="0.2.0-recalibrated")
    (bundle / "model.json").write_text(json.dumps(card), encoding="utf-8")
    for options, key, reason in (
            (["--model", bundle], "skipped_with_another_model", "screened with another model (threshold 0.661, "
                                                               "now 0.5)"),
            (["--numbering", "verse"], "skipped_with_other_settings", "screened with numbering auto, now verse"),
            (["--contrast-phase", "portal-venous"], "skipped_with_other_settings",
             "screened with contrast phase not given, now portal-venous")):
        run = _cli("--manifest", manifest, "--out", out, "--json", "--allow-outside-root", *options)
        summary = json.loads(run.stdout)
        assert run.returncode == 0 and summary[key] == 1 and summary["screened"] == 0, (options, run.stderr)
        assert f"(e.g. a: {reason})" in run.stderr, (options, run.stderr)
        row = json.loads((out / "screen_index.json").read_text(encoding="utf-8"))["cases"][0]
        assert row["stale"] == reason and row["status"] == "screened"
    plain = json.loads(_cli("--manifest", manifest, "--out", out, "--json", "--allow-outside-root").stdout)
    assert plain["index_counts"]["stale"] == 0 and not any(plain[k] for k in ("skipped_with_another_model",
                                                                             "skipped_with_other_settings"))
    # `cp -r out/* copy/` leaves the archive's own marker behind: the refusal now says so
    copy = tmp_path / "copy"
    copy.mkdir()
    for entry in out.iterdir():
        if not entry.name.startswith("."):
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, copy / entry.name)
    run = _cli("--manifest", manifest, "--out", copy, "--allow-outside-root")
    assert run.returncode == 2 and "its own .mvcf-output marker is missing though folders in it carry theirs (a)" \
        in run.stderr and run.stderr.count("\n") == 1


def test_shards_ending_together_write_the_index_one_after_the_other(tmp_path):
    """Two shards ending at once: the later read the cases before the earlier had placed its own and wrote an
    index with them pending. The index is now read and written under an OS lock."""
    import threading

    from mvcf.fileio import one_at_a_time
    from mvcf.outputs_guard import INDEX_LOCK
    from mvcf.screen_index import INDEX_TSV, write_index

    out = tmp_path / "out"
    out.mkdir()
    (out / ".mvcf-output").write_text("{}")
    with one_at_a_time(out / INDEX_LOCK):
        writer = threading.Thread(target=write_index, args=(out, ["a"]))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and not (out / INDEX_TSV).exists()   # waits for the other shard's turn
    writer.join(timeout=30)
    assert not writer.is_alive() and (out / INDEX_TSV).is_file()


def test_a_killed_case_write_is_swept_by_a_later_run_even_when_that_case_is_finished(tmp_path, small_case,
                                                                                    monkeypatch):
    """A SIGKILL while a case folder was written left `.a.tmp-<pid>-...`; the case, finished by the rerun,
    is never written again, so nothing swept it."""
    from mvcf import fileio

    monkeypatch.setattr(fileio, "STALE_AGE_S", 0.0)   # a leftover's change time cannot be set back
    ct, seg = small_case
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,ct,seg\na,{ct},{seg}\n")
    out = tmp_path / "out"
    assert _cli("--manifest", manifest, "--out", out, "--allow-outside-root").returncode == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    left = out / f".a.tmp-{dead}-x1y2z3"
    left.mkdir()
    from mvcf.cli.main import main

    assert main(["--progress", "none", "screen", "--manifest", str(manifest), "--out", str(out),
                 "--allow-outside-root"]) == 0
    assert not left.exists() and (out / "a" / "screen.json").is_file()


@pytest.mark.parametrize("offset", [5e-6, -4e-5])
def test_a_probability_beside_the_threshold_is_shown_on_the_side_its_call_says(tmp_path, monkeypatch, capsys,
                                                                              offset):
    """The screen stored P rounded to 4 decimals but called it unrounded (0.661 "MVCF" at 0.66104), and the
    text, overview and report showed 3 or 2 decimals ("0.660 OVCF", then "flagged (P >= 0.66): none"). Every
    output now keeps the probability as called and shows as many decimals as it takes."""
    import mvcf.inference as inference
    from mvcf.cli.main import main
    from mvcf.predict import results_decimals, shown_decimals

    assert shown_decimals(0.6610353, [0.6610353 + 5e-6]) == 3 and shown_decimals(0.6610353, [0.66099]) == 5
    assert results_decimals([{"probability_malignant": 0.66102, "threshold": 0.6610353}, {"error": "x"}]) == 5
    # found for all rows together: 5 decimals, enough for the first pair, make the second read 0.66050 twice
    rows = [{"probability_malignant": 0.66099, "threshold": 0.6610353},
            {"probability_malignant": 0.6604999, "threshold": 0.6605001}]
    assert results_decimals(rows) == 7
    real = inference.forward

    def pinned(bundle, arrays, *args, **kwargs):
        real(bundle, arrays, *args, **kwargs)
        return np.full(len(arrays), bundle.threshold + offset)

    monkeypatch.setattr(inference, "forward", pinned)
    assert main(["--progress", "none", "screen", "--ct", str(CT), "--seg", str(SEG), "--out", str(tmp_path / "s"),
                 "--report", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    result = json.loads((tmp_path / "s" / "screen.json").read_text(encoding="utf-8"))
    threshold = result["threshold"]
    rows = [r for r in result["vertebrae"] if r["probability_malignant"] is not None]
    assert rows and all((r["probability_malignant"] >= threshold) == (r["prediction"] == "MVCF") for r in rows)
    digits = shown_decimals(threshold, [r["probability_malignant"] for r in rows])
    shown = f"{threshold + offset:.{digits}f}"
    assert (float(shown) >= float(f"{threshold:.{digits}f}")) == (offset > 0)
    assert f"P(MVCF) >= {threshold:.{digits}f})" in text and f"{shown}  {rows[0]['prediction']}" in text
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert shown in html and f"(threshold {threshold:.{digits}f})" in html
